"""The router with the real offline MiniLM: domains, fallback, panel, pin, follow-ups, the
batcher, encoder fine-tuning and the `mesh router eval --json` schema. No Ray, no Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router import RouteBatcher, Router, SentenceTransformerEncoder

pytestmark = pytest.mark.slow

SPECIALISTS = {
    "code": [
        "Write a Python function that reverses a list",
        "Fix this segfault in my C program",
        "Write a SQL query that joins two tables",
        "What does this JavaScript TypeError mean?",
        "Explain recursion with an example in Java",
    ],
    "cooking": [
        "How long should I boil an egg?",
        "Give me a recipe for banana bread",
        "What can I use instead of buttermilk in pancakes?",
        "How do I make a sourdough starter?",
        "How do I season a cast iron pan?",
    ],
    "finance": [
        "Should I pay off my debt or invest?",
        "How does compound interest work?",
        "What is an index fund?",
        "How do I make a monthly budget?",
        "Explain capital gains tax on shares",
    ],
}
OUT_OF_SCOPE = [
    "Who won the football world cup in 1998?",
    "What is the tallest mountain in Africa?",
]


@pytest.fixture(scope="module")
def encoder() -> Iterator[SentenceTransformerEncoder]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SentenceTransformerEncoder()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def router(encoder: SentenceTransformerEncoder) -> Router:
    return Router.from_examples(SPECIALISTS, fallback="finance", encoder=encoder)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("My Rust code panics with an index out of bounds error", "code"),
        ("How many minutes do I roast a chicken for?", "cooking"),
        ("Is a Roth IRA better than a 401k for retirement savings?", "finance"),
    ],
)
def test_clear_domain_queries(router: Router, query: str, expected: str) -> None:
    decision = router.route(query)
    assert decision.chosen == expected
    assert decision.mode == "single"
    assert decision.targets[0].nearest  # explained by its nearest examples


def test_out_of_scope_falls_back_after_fit(encoder: SentenceTransformerEncoder) -> None:
    router = Router.from_examples(SPECIALISTS, encoder=encoder, fallback="finance")
    router.fit(
        [
            "How do I sort a dictionary by value in Python?",
            "What spices go into a curry?",
            "What is a mortgage rate?",
            "What is the capital of Peru?",
            "Who painted the Mona Lisa?",
        ],
        ["code", "cooking", "finance", None, None],
    )
    for query in OUT_OF_SCOPE:
        decision = router.route(query)
        assert decision.mode == "fallback", decision.reason
        assert decision.chosen == "finance"
    assert router.route("How do I boil pasta?").chosen == "cooking"


def test_two_domain_query_makes_a_panel(encoder: SentenceTransformerEncoder) -> None:
    router = Router.from_examples(SPECIALISTS, encoder=encoder, panel_margin=0.15)
    decision = router.route("Write a Python function for a recipe")
    assert decision.mode == "panel", decision.reason
    assert set(decision.panel) == {"code", "cooking"}


def test_mention_pins(router: Router) -> None:
    decision = router.route("@cooking how do I reverse a list in Python?")
    assert (decision.mode, decision.chosen) == ("pinned", "cooking")
    assert decision.targets[1].name == "code"


def test_follow_up_stays_and_a_new_topic_leaves(router: Router) -> None:
    history = ["How do I reverse a list in Python?"]
    follow_up = router.route("and in Rust?", history)
    assert (follow_up.chosen, follow_up.follow_up_of) == ("code", "code")
    assert router.route("ok thanks, what about the second one?", history).chosen == "code"
    new_topic = router.route("Give me a recipe for lasagna", history)
    assert (new_topic.chosen, new_topic.follow_up_of) == ("cooking", None)


def test_batcher_matches_sequential_routes(router: Router) -> None:
    queries = [f"question {i}: how do I invest {i} dollars?" for i in range(6)]
    queries += [f"question {i}: how do I bake {i} cookies?" for i in range(6)]

    async def main() -> list[str | None]:
        batcher = RouteBatcher(router)
        decisions = await asyncio.gather(*(batcher.route(q) for q in queries))
        await batcher.close()
        assert batcher.batches < len(queries)
        return [d.chosen for d in decisions]

    assert asyncio.run(main()) == [router.route(q).chosen for q in queries]


def test_finetuned_encoder_artifact_round_trip(tmp_path: Path) -> None:
    from router.finetune import FinetuneSettings, finetune_encoder, load_encoder, read_artifact

    out = tmp_path / "router-encoder"
    artifact = finetune_encoder(
        SPECIALISTS, out, settings=FinetuneSettings(steps=2, batch_size=8, per_specialist=2)
    )
    assert read_artifact(out).examples_digest == artifact.examples_digest
    loaded = load_encoder(out)
    assert loaded.encode(["hello"]).shape == (1, 384)
    router = Router.from_examples(SPECIALISTS, encoder=loaded)
    assert router.route("How do I boil an egg?").chosen == "cooking"


def write_data(tmp_path: Path) -> tuple[Path, Path]:
    examples = tmp_path / "ex.jsonl"
    examples.write_text(
        "".join(
            json.dumps({"specialist": name, "text": text}) + "\n"
            for name, texts in SPECIALISTS.items()
            for text in texts
        )
    )
    rows = [
        {"text": "Why does my Python loop never end?", "label": "code"},
        {"text": "How do I make fluffy pancakes?", "label": "cooking"},
        {"text": "What is a good savings rate?", "label": "finance"},
        *({"text": q, "label": None} for q in OUT_OF_SCOPE),
    ]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return examples, test


def test_eval_cli_json_schema(tmp_path: Path) -> None:
    from mesh.cli.router import router_app

    examples, test = write_data(tmp_path)
    args = ["eval", "--examples", str(examples), "--test", str(test), "--val", str(test)]
    result = CliRunner().invoke(router_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stderr may carry the model's loading bar
    for key in ("accuracy", "macro_f1", "oos_auroc", "oos_accuracy", "p50_ms", "p95_ms"):
        assert isinstance(report[key], float)
    assert report["n_test"] == 5
    assert report["method"] == "knn"
    assert report["accuracy"] == 1.0
    assert report["confusion"]["code"] == {"code": 1}


def test_fit_cli_stores_an_artifact_with_thresholds_that_eval_reuses(tmp_path: Path) -> None:
    from mesh.cli.router import router_app
    from router.finetune import read_artifact

    examples, test = write_data(tmp_path)
    out = tmp_path / "artifact"
    fit = ["fit", "--examples", str(examples), "--out", str(out), "--steps", "2"]
    result = CliRunner().invoke(router_app, [*fit, "--val", str(test), "--json"])
    assert result.exit_code == 0, result.output
    calibration = read_artifact(out).calibration
    assert calibration is not None and calibration.method == "knn"
    args = ["eval", "--examples", str(examples), "--test", str(test), "--encoder", str(out)]
    result = CliRunner().invoke(router_app, [*args, "--json", "--latency-samples", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fitted"] is True
