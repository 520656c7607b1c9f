"""External data: exact budget accounting, schedules, training rows and the HTTP teacher."""

from __future__ import annotations

import functools
import json
import random
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omegaconf import OmegaConf

from sirt.config.compose import compose
from sirt.config.defaults import default, option
from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import DatasetSchema
from sirt.loop.checks import validated
from sirt.loop.round import train_rows
from sirt.loop.teacher import make_teacher
from sirt.plan.schedule import allocate, eta_schedule
from sirt.runs.rundir import RunDir
from sirt.stages.external import training_rows
from tests.conftest import MICRO


@pytest.mark.parametrize("name", ["early", "uniform", "late", "custom"])
def test_allocation_sums_exactly_to_the_budget(name):
    rng = random.Random(0)
    for _ in range(300):
        T = rng.randint(1, 20)
        M = rng.randint(0, 1000)
        raw = [rng.random() for _ in range(T)]
        schedule = default("schedule", name=name, round=rng.randint(1, T), eta=[x / sum(raw) for x in raw])
        eta = eta_schedule(schedule, T)
        counts = allocate(eta, M)
        assert sum(counts) == M and len(counts) == T and min(counts) >= 0
        assert all(abs(c - e * M) < 1 for c, e in zip(counts, eta))  # each within one item of exact


def test_schedules_put_the_budget_where_they_say():
    assert allocate(eta_schedule(default("schedule", name="early"), 4), 10) == [10, 0, 0, 0]
    assert allocate(eta_schedule(default("schedule", name="late", round=3), 4), 10) == [0, 0, 10, 0]
    assert allocate(eta_schedule(default("schedule", name="uniform"), 3), 10) == [4, 3, 3]  # ties to earlier rounds
    assert allocate(eta_schedule(default("schedule", name="none"), 3), 10) == [0, 0, 0]


@pytest.mark.parametrize(
    "schedule",
    [default("schedule", name="custom", eta=[0.5, 0.6]), default("schedule", name="custom", eta=[1.5, -0.5]),
     default("schedule", name="custom", eta=[1.0]), default("schedule", name="late", round=3)],
)
def test_invalid_schedules_are_refused(schedule):
    with pytest.raises(ConfigError):
        eta_schedule(schedule, 2)


def record(i: int, pick: int | None, correct: list[bool]) -> dict:
    return {"prompt": f"p{i}", "question": f"q{i}", "reference": f"gold{i}",
            "samples": [f"s{i}{j}" for j in range(len(correct))],
            "nll": [3.0, 1.0, 2.0][: len(correct)], "n_tokens": [1] * len(correct), "correct": correct, "pick": pick}


def test_training_rows_swap_in_external_targets():
    records = [record(0, 0, [True, False]), record(1, None, [False, False]), record(2, 1, [True, True])]
    rows, used = training_rows(records, 0, "gold", random.Random(0))
    assert used == 0 and [r["completion"] for r in rows] == ["s00", "s21"]
    rows, used = training_rows(records, 3, "gold", random.Random(0))
    assert used == 3 and [r["completion"] for r in rows] == ["gold0", "gold1", "gold2"]
    rows, used = training_rows(records, 3, "oracle", random.Random(0))
    assert [r["completion"] for r in rows] == ["s00", "s21"]  # record 1 has no correct sample
    rows, _ = training_rows(records, 3, "teacher", random.Random(0), teacher=lambda qs: [q + "!" for q in qs])
    assert [r["completion"] for r in rows] == ["q0!", "q1!", "q2!"]  # the teacher is asked the question
    assert [r["prompt"] for r in rows] == ["p0", "p1", "p2"]  # and the student trains on its own prompt


def test_oracle_without_a_right_sample_keeps_the_self_pick_and_is_not_counted():
    # record 1 was picked by the verifier (sample 1) but none of its samples is right: no oracle target
    records = [record(0, 0, [True, False]), record(1, 1, [False, False]), record(2, None, [False, True])]
    rows, used = training_rows(records, 3, "oracle", random.Random(0))
    assert [r["completion"] for r in rows] == ["s00", "s11", "s21"]
    assert used == 2  # the oracle replaced the targets of records 0 and 2 only


def test_restart_from_base_rebuilds_each_earlier_round_with_its_own_external_items(tmp_path):
    config = validated(compose("rounds=3", "schedule=early", "external.budget=2", "trainer.restart_from_base=true"))
    ext = allocate(eta_schedule(config.schedule, config.rounds), config.external.budget)
    assert ext == [2, 0, 0]  # an Early schedule: all external items train model_1
    run = RunDir(tmp_path)
    run.commit_round(0, {"round": 0}, [record(i, None, [False, False]) for i in range(3)], {})  # nothing picked
    run.commit_round(1, {"round": 1}, [record(i, 1, [False, True]) for i in range(3)], {})
    round1, used1, _ = train_rows(run, config, 1, ext, teacher=None)
    assert used1 == 2 and sorted(r["completion"] for r in round1) in (["gold0", "gold1"], ["gold0", "gold2"],
                                                                      ["gold1", "gold2"])
    rows, used, rng = train_rows(run, config, 2, ext, teacher=None)
    assert rows == round1 + [{"prompt": f"p{i}", "completion": f"s{i}1"} for i in range(3)]  # model_1's rows first
    assert used == 0  # round 2's own external items; the rebuilt ones were counted in round 1
    plain = validated(compose("rounds=3", "schedule=early", "external.budget=2"))
    assert rng.getstate() == train_rows(run, plain, 2, ext, None)[2].getstate()  # the replay draw is unchanged


class Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible server on 127.0.0.1 (/v1/chat/completions and /v1/completions) that records
    what it is sent; ``server.failures`` holds (status, headers) answers to give before the real ones,
    and a question in ``server.refuse`` is answered 401."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.seen.append((self.path, body))
            server.arrivals.append(time.monotonic())
            asked = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
            failure = (401, {}) if asked in server.refuse else server.failures.pop(0) if server.failures else None
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
        try:
            self.answer(server, body, failure)
        finally:
            with server.lock:
                server.in_flight -= 1

    def answer(self, server, body: dict, failure: tuple[int, dict] | None) -> None:
        if failure is not None:
            return self.send(failure[0], {"error": "scripted"}, failure[1])
        asked = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        time.sleep(server.delay(asked))
        if server.mode == "malformed" or self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self.send(200 if server.mode == "malformed" else 404, {"x": 1})
        choice = {"message": {"role": "assistant", "content": f"answer to {asked}"}} if "messages" in body else {
            "text": f"answer to {asked}"}
        self.send(200, {"choices": [choice]})

    def send(self, status: int, reply: dict, headers: dict | None = None) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.lock, server.seen, server.failures, server.refuse = threading.Lock(), [], [], set()
    server.arrivals = []  # when each request reached the server (time.monotonic), beside server.seen
    server.in_flight = server.peak = 0
    server.mode, server.delay = "ok", lambda asked: 0.0
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@functools.cache
def teacher_defaults() -> dict:
    """``external.teacher`` as ``external=teacher`` composes it: conf/ holds every default of a teacher."""
    cfg = compose("external=teacher")
    return OmegaConf.to_container(cfg.external.teacher, resolve=True)


def teacher(base_url: str, dataset: DatasetSchema | None = None, **kw):
    """The HTTP teacher the training loop builds, from the same call."""
    raw = {**teacher_defaults(), "kind": "http", "base_url": base_url, "model_name": "stub", **kw}
    return make_teacher(raw, dataset or default("dataset"), default("generation"), set())


def gsm8k() -> DatasetSchema:
    return option("dataset", "gsm8k", DatasetSchema)


def test_the_teacher_is_asked_the_question_not_the_students_chat_prompt(stub):
    """The student's prompt carries its chat template and BOS; the server must see the question in the
    dataset's user turn, sent to the chat endpoint."""
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    chat_prompt = f"<s><|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    records = [{**record(0, 0, [True]), "prompt": chat_prompt, "question": question}]
    rows, used = training_rows(records, 1, "teacher", random.Random(0), teacher(stub.url, gsm8k()).respond)
    [(path, body)] = stub.seen
    user = gsm8k().chat.user.format(question=question)
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": user}] and body["model"] == "stub"
    assert "<|" not in json.dumps(body) and "<s>" not in json.dumps(body)
    assert used == 1 and rows == [{"prompt": chat_prompt, "completion": f"answer to {user}"}]


def test_the_dataset_system_message_is_sent_and_wrap_false_sends_the_bare_question(stub):
    dataset = gsm8k()
    dataset.chat.system = "You are a careful tutor."
    teacher(stub.url, dataset).respond(["2+2?"])
    teacher(stub.url, dataset, wrap=False).respond(["2+2?"])
    assert stub.seen[0][1]["messages"] == [{"role": "system", "content": "You are a careful tutor."},
                                           {"role": "user", "content": dataset.chat.user.format(question="2+2?")}]
    assert stub.seen[1][1]["messages"] == [{"role": "user", "content": "2+2?"}]


def test_the_legacy_completions_endpoint_on_request(stub):
    answers = teacher(stub.url, gsm8k(), endpoint="completions").respond(["2+2?"])
    [(path, body)] = stub.seen
    assert path == "/v1/completions" and body["prompt"] == gsm8k().prompt_template.format(question="2+2?")
    assert answers == [f"answer to {body['prompt']}"]


def test_concurrent_requests_come_back_in_the_order_asked(stub):
    questions = [f"q{i}" for i in range(6)]
    stub.delay = lambda asked: 0.05 * (6 - int(asked[1:]))  # the first asked is answered last
    answers = teacher(stub.url, concurrency=3).respond(questions)
    assert answers == [f"answer to {q}" for q in questions]
    assert stub.peak >= 2  # requests overlapped


@pytest.mark.parametrize("status,after,waited", [(429, "1", (0.9, 5.0)), (503, "in 3 s", (1.0, 5.0)),
                                                 (503, None, (0.3, 0.9))])
def test_retry_after_is_honoured_else_the_client_backs_off(stub, status, after, waited):
    """The openai client's own retries: a Retry-After in seconds or as an HTTP date, else 0.5 s less jitter."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    headers = {} if after is None else {"Retry-After": when if after == "in 3 s" else after}
    stub.failures = [(status, headers)]
    assert teacher(stub.url, retries=2).respond(["q"]) == ["answer to q"]
    assert len(stub.seen) == 2
    # the wait is read between the two requests as the server saw them: the client's start-up stays outside it
    first, retry = stub.arrivals
    assert waited[0] <= retry - first < waited[1]


def test_a_server_that_keeps_failing_gives_one_error_after_bounded_retries(stub):
    stub.failures = [(503, {})] * 10
    with pytest.raises(InputError) as err:
        teacher(stub.url, retries=2).respond(["q"])
    message = str(err.value)
    assert f"{stub.url}/chat/completions" in message and "HTTP 503" in message and "3 tries" in message
    assert "\n" not in message and len(stub.seen) == 3


def test_a_refusal_is_not_retried(stub):
    stub.failures = [(401, {})]
    with pytest.raises(InputError, match="HTTP 401") as err:
        teacher(stub.url, retries=3).respond(["q"])
    assert stub.url in str(err.value) and len(stub.seen) == 1


def test_one_failure_stops_the_batch_without_waiting_out_the_others(stub):
    stub.refuse, stub.failures = {"q0"}, [(503, {"Retry-After": "30"})]
    start = time.perf_counter()
    with pytest.raises(InputError, match="HTTP 401"):
        teacher(stub.url, concurrency=2, retries=3).respond(["q0", "q1"])
    assert time.perf_counter() - start < 5  # q1's 30 s wait was cut short


def test_http_teacher_timeout_is_a_clear_error(stub):
    stub.delay = lambda asked: 1.0
    with pytest.raises(InputError, match="gave up after 2 tries, last: TimeoutError"):
        teacher(stub.url, timeout=0.2, retries=1).respond(["q"])


def test_http_teacher_malformed_reply(stub):
    stub.mode = "malformed"
    with pytest.raises(InputError, match="malformed reply"):
        teacher(stub.url).respond(["q"])
    assert len(stub.seen) == 1


def test_an_unreachable_server_fails_in_one_line():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        teacher(url, timeout=0.5, retries=1).respond(["q"])
    message = str(err.value)
    assert f"{url}/chat/completions" in message and "2 tries" in message and "refused" in message.lower()
    assert "\n" not in message and time.perf_counter() - start < 5


@pytest.mark.slow
def test_a_local_teacher_poses_the_question_in_its_own_template(cache_dir):
    """kind=model: the teacher's greedy answer to its own prompt for the question (the organism's
    plain template), not a continuation of the bare question or of the student's prompt."""
    from sirt.stages.generation import sample

    micro = compose(*MICRO).model  # the solver as debug=micro teaches it, then a brief verifier
    small = OmegaConf.from_dotlist(["teach.verify_problems=16", "teach.verify_steps=2"])
    dataset, generation = default("dataset", levels=[1, 2]), default("generation", max_new_tokens=12)
    model = OmegaConf.merge(teacher_defaults()["model"], {"tiny": micro.tiny, "teach": micro.teach}, small)
    local = make_teacher({**teacher_defaults(), "model": OmegaConf.to_container(model)}, dataset, generation, set())
    questions = ["2+3", "4-1", "1+1+2"]
    prompts = [dataset.prompt_template.format(question=q) for q in questions]  # no chat template, no BOS
    expected = [row[0].text for row in sample(local.model, local.tokenizer, prompts, generation, n=1, greedy=True)]
    assert local.respond(questions) == expected
