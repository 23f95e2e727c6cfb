"""The conversation log as a user meets it: `yoc ask`/`draw` and the chat app write it,
`yoc logs` (-n, -q, --concept, --json, off/on/status) and `yoc path` read it."""

from __future__ import annotations

import json
from pathlib import Path

from cli_run import run_yoc

from yoc_assistant.app.conversation_log import ConversationLog
from yoc_assistant.assistant import Request, Response
from yoc_assistant.library import Library
from yoc_assistant.library.ingest import normalize_file, pixel_hash

ROOT = Path(__file__).resolve().parent.parent
PHOTO = sorted((ROOT / "concepts" / "sunny" / "held-out").glob("*.png"))[0]


def logs_json(*args: str) -> list[dict]:
    done = run_yoc("logs", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ask_is_logged_with_its_answer_seed_and_backbone_and_can_be_repeated() -> None:
    asked = run_yoc("ask", "what is in this photo?", "--image", PHOTO, "--json")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    failed = run_yoc("ask", "What breed is my dachshund?")
    assert failed.returncode == 2

    first, second = logs_json("-n", "2")
    assert first["source"] == "ask" and first["request"] == "what is in this photo?"
    assert first["answer"] == answer["text"] and first["modality"] == "text"
    assert first["seed"] == answer["seed"] and isinstance(first["seed"], int)
    assert first["backbone"] == "yoc-toy" and first["backbone_fingerprint"]
    assert first["attached"] == [pixel_hash(normalize_file(PHOTO).image)]
    assert first["route"]["text"] > 0.5 and first["seconds"] > 0 and first["error"] is None
    assert second["answer"] is None and "'dachshund'" in second["error"]

    # the logged seed gives the same answer again
    again = run_yoc("ask", "what is in this photo?", "--image", PHOTO, "--seed", str(first["seed"]),
                    "--json")
    assert json.loads(again.stdout)["text"] == first["answer"]

    shown = run_yoc("logs", "-n", "1").stdout
    assert "you: what is in this photo?  [1 photo]" in shown and f"seed {first['seed']}" in shown


def _fill(n: int) -> None:
    with Library.open() as lib:
        log = ConversationLog(lib)
        for i in range(n):
            text = f"is <bo> in photo {i}?" if i % 2 else f"what colour is <sunny> {i}?"
            log.record(Request(text=text, seed=i), source="chat",
                       response=Response(modality="text", text=f"answer {i}: collar" if i == 3 else "no"))


def test_logs_n_query_concept_and_json() -> None:
    assert run_yoc("logs").stderr.strip() == "Nothing logged yet."
    _fill(6)
    assert [e["seed"] for e in logs_json()] == [3, 4, 5]  # the newest 3, oldest first
    assert [e["seed"] for e in logs_json("-n", "0")] == list(range(6))
    assert [e["seed"] for e in logs_json("-q", "COLLAR")] == [3]  # in the answer, any case
    assert [e["seed"] for e in logs_json("-q", "photo 1")] == [1]  # in the request
    assert [e["seed"] for e in logs_json("--concept", "<BO>", "-n", "0")] == [1, 3, 5]
    assert [e["seed"] for e in logs_json("--concept", "sunny", "-n", "2")] == [2, 4]
    assert logs_json("-q", "100%") == []  # LIKE wildcards are literal
    assert run_yoc("logs", "-q", "nothing such").stderr.strip() == "No entry matches."


def test_logs_off_on_and_status() -> None:
    status = json.loads(run_yoc("logs", "status", "--json").stdout)
    assert status == {"enabled": True, "entries": 0, "database": status["database"]}
    assert status["database"].endswith("library.db")
    assert run_yoc("logs", "off").returncode == 0
    _fill(2)
    assert logs_json() == []
    assert "off" in run_yoc("logs", "status").stdout
    assert "off" in run_yoc("logs").stderr
    assert run_yoc("logs", "on").returncode == 0
    _fill(1)
    assert len(logs_json()) == 1
    assert json.loads(run_yoc("logs", "status", "--json").stdout)["entries"] == 1


def test_yoc_path_prints_the_library_pictures_and_logs_folders(yoc_home: Path) -> None:
    done = run_yoc("path")
    assert done.returncode == 0
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert lines == {"library": str(yoc_home), "database": str(yoc_home / "library.db"),
                     "pictures": str(yoc_home / "pictures"), "logs": str(yoc_home / "logs")}
    assert run_yoc("path", "pictures").stdout.strip() == str(yoc_home / "pictures")
    assert json.loads(run_yoc("path", "--json").stdout)["logs"] == str(yoc_home / "logs")
