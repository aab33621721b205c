"""Evaluation runner: prompts go out with the right system turn, answers come back in input order
and are scored; local and mesh generators honour the `Generator` contract."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from registry.errors import InvalidRequestError, UnavailableError
from specialists.evaluation import LocalGenerator, MeshGenerator, compare, evaluate, with_system
from specialists.tasks import get_task
from specialists.training.records import ChatRecord, Turn


def record(question: str, answer: str) -> ChatRecord:
    return ChatRecord(
        messages=[
            Turn(role="system", content="short prompt"),
            Turn(role="user", content=question),
            Turn(role="assistant", content=answer),
        ]
    )


RECORDS = [record("capital of France?", "Paris"), record("capital of Peru?", "Lima")]


class Scripted:
    """A generator that answers from a table and remembers what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.seen: list[list[Turn]] = []

    def generate(self, prompts: list[list[Turn]], *, max_tokens: int) -> list[str]:
        self.seen.extend(prompts)
        return [self.answers.get(p[-1].content, "") for p in prompts]


def test_with_system_replaces_or_adds_the_system_turn() -> None:
    prompt = RECORDS[0].prompt
    assert with_system(prompt, None) == prompt
    assert [t.content for t in with_system(prompt, "best")] == ["best", "capital of France?"]
    assert with_system(prompt[1:], "best")[0] == Turn(role="system", content="best")


def test_evaluate_scores_each_answer_and_gives_the_mean_as_a_fraction() -> None:
    generator = Scripted({"capital of France?": " paris ", "capital of Peru?": "Quito"})
    report = evaluate(RECORDS, generator, "exact", max_tokens=8, system_prompt="best")
    assert (report.score, report.n) == (0.5, 2)
    assert [(i.prediction, i.score) for i in report.items] == [(" paris ", 1.0), ("Quito", 0.0)]
    assert all(p[0].content == "best" for p in generator.seen)


def test_evaluate_refuses_no_records_and_a_generator_that_drops_answers() -> None:
    with pytest.raises(InvalidRequestError):
        evaluate([], Scripted({}), "exact", max_tokens=8)

    class Short(Scripted):
        def generate(self, prompts: list[list[Turn]], *, max_tokens: int) -> list[str]:
            return ["x"]

    with pytest.raises(UnavailableError, match="1 answers for 2 prompts"):
        evaluate(RECORDS, Short({}), "exact", max_tokens=8)


def test_compare_runs_both_with_their_own_prompts() -> None:
    tuned = Scripted({"capital of France?": "Paris", "capital of Peru?": "Lima"})
    base = Scripted({"capital of France?": "Paris"})
    result = compare(
        RECORDS, tuned, base, "exact", finetuned_prompt=None, base_prompt="best", max_tokens=8
    )
    assert result == {"metric": "exact", "base": 0.5, "finetuned": 1.0, "gain": 0.5, "n": 2}
    assert tuned.seen[0][0].content == "short prompt" and base.seen[0][0].content == "best"


def test_mesh_generator_sends_the_conversation_without_system_turn() -> None:
    bodies: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        assert request.headers["authorization"] == "Bearer k1"
        reply = body["messages"][-1]["content"].upper()
        return httpx.Response(200, json={"choices": [{"message": {"content": reply}}]})

    mesh = MeshGenerator(
        "http://mesh", "sql-writer", api_key="k1", transport=httpx.MockTransport(answer)
    )
    prompts = [r.prompt for r in RECORDS]
    assert mesh.generate(prompts, max_tokens=16) == ["CAPITAL OF FRANCE?", "CAPITAL OF PERU?"]
    assert all(b["model"] == "sql-writer" and b["temperature"] == 0 for b in bodies)
    assert all([m["role"] for m in b["messages"]] == ["user"] for b in bodies)


def test_mesh_generator_reports_the_mesh_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, text="no such specialist"))
    mesh = MeshGenerator("http://mesh", "nope", transport=transport)
    with pytest.raises(UnavailableError, match="404 for model nope: no such specialist"):
        mesh.generate([RECORDS[0].prompt], max_tokens=4)


def test_local_generator_keeps_input_order_across_sorted_batches(tiny_model_dir: Path) -> None:
    generator = LocalGenerator(str(tiny_model_dir), threads=1, batch_size=1)
    prompts = [
        [Turn(role="user", content="a much longer prompt than the next one, with more words")],
        [Turn(role="user", content="short")],
        [Turn(role="user", content="a prompt of middle length")],
    ]
    one_by_one = [generator.generate([p], max_tokens=4)[0] for p in prompts]
    assert generator.generate(prompts, max_tokens=4) == one_by_one
    generator.batch_size = 8
    assert len(generator.generate(prompts, max_tokens=4)) == 3


def test_local_generator_restores_the_callers_training_mode(tiny_model_dir: Path) -> None:
    loaded = LocalGenerator(str(tiny_model_dir), threads=1)
    loaded.model.train()
    wrapped = LocalGenerator.from_loaded(loaded.model, loaded.tokenizer, batch_size=2)
    assert isinstance(wrapped.generate([RECORDS[0].prompt], max_tokens=2)[0], str)
    assert loaded.model.training


@pytest.mark.slow
def test_the_real_base_answers_two_prompts_of_different_lengths_in_order() -> None:
    from specialists.catalog import SMOLLM2_SOURCE

    generator = LocalGenerator(SMOLLM2_SOURCE, threads=1, batch_size=2)
    _, held_out = get_task("sql").make_splits(0, 1, 0)
    prompts = [[Turn(role="user", content="Say hello.")], held_out[0].prompt]
    together = generator.generate(prompts, max_tokens=8)
    alone = [generator.generate([p], max_tokens=8)[0] for p in prompts]
    assert together == alone and all(isinstance(t, str) and t for t in together)


def test_local_generator_merges_a_lora_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    generator = LocalGenerator(str(tiny_model_dir), tmp_path / "adapter", threads=1)
    assert not hasattr(generator.model, "peft_config")  # merged into the weights
    assert len(generator.generate([RECORDS[0].prompt], max_tokens=2)) == 1
