"""External data: exact budget accounting, schedules, training rows and the HTTP teacher."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sirt.config.compose import compose
from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import ScheduleSchema
from sirt.loop.checks import validated
from sirt.loop.round import train_rows
from sirt.loop.teacher import HTTPTeacher, teacher_schema
from sirt.plan.schedule import allocate, eta_schedule
from sirt.runs.rundir import RunDir
from sirt.stages.external import training_rows


@pytest.mark.parametrize("name", ["early", "uniform", "late", "custom"])
def test_allocation_sums_exactly_to_the_budget(name):
    rng = random.Random(0)
    for _ in range(300):
        T = rng.randint(1, 20)
        M = rng.randint(0, 1000)
        raw = [rng.random() for _ in range(T)]
        schedule = ScheduleSchema(name=name, round=rng.randint(1, T), eta=[x / sum(raw) for x in raw])
        eta = eta_schedule(schedule, T)
        counts = allocate(eta, M)
        assert sum(counts) == M and len(counts) == T and min(counts) >= 0
        assert all(abs(c - e * M) < 1 for c, e in zip(counts, eta))  # each within one item of exact


def test_schedules_put_the_budget_where_they_say():
    assert allocate(eta_schedule(ScheduleSchema(name="early"), 4), 10) == [10, 0, 0, 0]
    assert allocate(eta_schedule(ScheduleSchema(name="late", round=3), 4), 10) == [0, 0, 10, 0]
    assert allocate(eta_schedule(ScheduleSchema(name="uniform"), 3), 10) == [4, 3, 3]  # ties to earlier rounds
    assert allocate(eta_schedule(ScheduleSchema(name="none"), 3), 10) == [0, 0, 0]


@pytest.mark.parametrize(
    "schedule",
    [ScheduleSchema(name="custom", eta=[0.5, 0.6]), ScheduleSchema(name="custom", eta=[1.5, -0.5]),
     ScheduleSchema(name="custom", eta=[1.0]), ScheduleSchema(name="late", round=3)],
)
def test_invalid_schedules_are_refused(schedule):
    with pytest.raises(ConfigError):
        eta_schedule(schedule, 2)


def record(i: int, pick: int | None, correct: list[bool]) -> dict:
    return {"prompt": f"p{i}", "reference": f"gold{i}", "samples": [f"s{i}{j}" for j in range(len(correct))],
            "nll": [3.0, 1.0, 2.0][: len(correct)], "n_tokens": [1] * len(correct), "correct": correct, "pick": pick}


def test_training_rows_swap_in_external_targets():
    records = [record(0, 0, [True, False]), record(1, None, [False, False]), record(2, 1, [True, True])]
    rows, used = training_rows(records, 0, "gold", random.Random(0))
    assert used == 0 and [r["completion"] for r in rows] == ["s00", "s21"]
    rows, used = training_rows(records, 3, "gold", random.Random(0))
    assert used == 3 and [r["completion"] for r in rows] == ["gold0", "gold1", "gold2"]
    rows, used = training_rows(records, 3, "oracle", random.Random(0))
    assert [r["completion"] for r in rows] == ["s00", "s21"]  # record 1 has no correct sample
    rows, _ = training_rows(records, 3, "teacher", random.Random(0), teacher=lambda ps: [p + "!" for p in ps])
    assert [r["completion"] for r in rows] == ["p0!", "p1!", "p2!"]


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
    """An OpenAI-compatible /v1/completions server on 127.0.0.1 with scripted behaviour."""

    mode = "ok"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Stub.mode == "slow":
            time.sleep(1.0)
        reply = {"choices": [{"text": f"answer to {body['prompt']}"}]} if Stub.mode != "malformed" else {"x": 1}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def http_teacher(base_url: str, **kw) -> HTTPTeacher:
    return HTTPTeacher(teacher_schema({"kind": "http", "base_url": base_url, "model_name": "stub", **kw}))


def test_http_teacher_success(stub_server):
    Stub.mode = "ok"
    assert http_teacher(stub_server).respond(["Q: 1+1\nA: "]) == ["answer to Q: 1+1\nA: "]


def test_http_teacher_timeout_is_a_clear_error(stub_server):
    Stub.mode = "slow"
    with pytest.raises(InputError, match="no valid reply after 2 tries"):
        http_teacher(stub_server, timeout=0.2, retries=2).respond(["q"])


def test_http_teacher_malformed_reply(stub_server):
    Stub.mode = "malformed"
    with pytest.raises(InputError, match="malformed reply"):
        http_teacher(stub_server).respond(["q"])


def test_http_teacher_unreachable():
    with pytest.raises(InputError, match=re.escape("base_url=http://127.0.0.1:9/v1")):
        http_teacher("http://127.0.0.1:9/v1", timeout=0.5, retries=2).respond(["q"])
