"""`gpts create|list|show|search|edit|versions|restore|rm|rate|export|import|run|conversations` as a user types them."""

import json

import pytest

from gpts.store.db import connect
from gpts.store.ready import INSTALLED_KEY
from helpers import run, tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model", context_length=1024)  # room for a knowledge prompt


@pytest.fixture
def gpts_cli(monkeypatch, capsys, tmp_path):
    """`gpts ...` in a store where the ready GPTs count as installed (one test installs them for real)."""
    connect().execute("INSERT INTO settings (key, value) VALUES (?, '1')", (INSTALLED_KEY,))
    monkeypatch.chdir(tmp_path)
    return lambda *args: run(monkeypatch, capsys, *args)


@pytest.fixture
def hr_spec(tmp_path, model_dir):
    (tmp_path / "handbook.md").write_text("# Handbook\n\nEvery employee gets 27 days of paid leave a year.\n\n"
                                          "The office cat is named Biscuit Thunderpaw.\n")
    (tmp_path / "hr.yaml").write_text(f"""
name: Larkspur HR helper
slug: larkspur-hr
description: Answers questions from the Larkspur Labs employee handbook.
instructions: |
  You answer questions from Larkspur Labs employees using the handbook. Today is {{{{current_date}}}}.
conversation_starters: ["How many days of leave do I get?"]
examples:
  - - {{role: user, content: "Can I bring my dog to work?"}}
    - {{role: assistant, content: "Yes, on Fridays."}}
knowledge: [handbook.md]
model: {model_dir}
generation: {{temperature: 0.2, max_tokens: 16, stop: []}}
retrieval: {{chunk_tokens: 64, overlap_tokens: 16, top_k: 2}}
category: productivity
tags: [hr, handbook]
author: Ada
visibility: private
""")
    return tmp_path / "hr.yaml"


def test_the_life_of_a_gpt(gpts_cli, hr_spec, model_dir, tmp_path):
    code, out, err = gpts_cli("create", "--spec", str(hr_spec), "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["slug"] == "larkspur-hr" and created["files"][0]["name"] == "handbook.md"

    code, out, _ = gpts_cli("list", "--json")
    assert [g["slug"] for g in json.loads(out)] == ["larkspur-hr"]
    code, out, _ = gpts_cli("search", "handbook")
    assert "larkspur-hr" in out
    code, out, _ = gpts_cli("show", "larkspur-hr")
    assert "Larkspur HR helper" in out and "handbook.md (2 chunks)" in out

    code, out, err = gpts_cli("run", "larkspur-hr", "--message", "What is the office cat called?", "--json")
    assert code == 0, err
    reply = json.loads(out)
    assert set(reply) == {"gpt", "version", "conversation_id", "reply", "citations", "usage", "dropped_turns"}
    assert reply["usage"]["completion_tokens"] <= 16  # the spec's max_tokens
    code, out, err = gpts_cli("run", "larkspur-hr", "--message", "And the dogs?", "--conversation",
                              reply["conversation_id"], "--json", "--max-new-tokens", "3")
    assert code == 0, err
    assert json.loads(out)["usage"]["completion_tokens"] <= 3
    code, out, _ = gpts_cli("conversations", "show", reply["conversation_id"], "--json")
    assert [m["content"] for m in json.loads(out)["messages"] if m["role"] == "user"] == [
        "What is the office cat called?", "And the dogs?"]

    code, out, err = gpts_cli("edit", "larkspur-hr", "--instructions", "Answer in one sentence.", "--note", "shorter")
    assert code == 0 and "version 2" in err
    code, out, _ = gpts_cli("versions", "larkspur-hr", "--json")
    assert [(v["version"], v["note"]) for v in json.loads(out)] == [(1, "created"), (2, "shorter")]
    code, out, _ = gpts_cli("restore", "larkspur-hr", "1")
    assert "version 3, equal to version 1" in out

    code, out, _ = gpts_cli("rate", "larkspur-hr", "5", "--review", "Knows the handbook.", "--user", "ada")
    assert "Average 5.0 from 1 rating" in out
    code, out, _ = gpts_cli("trending", "--json")
    assert json.loads(out)[0]["activity"] == 2  # one conversation, one rating

    code, out, _ = gpts_cli("export", "larkspur-hr", "--out", str(tmp_path / "hr.gpt"))
    assert code == 0 and (tmp_path / "hr.gpt").is_file()
    code, out, _ = gpts_cli("import", str(tmp_path / "hr.gpt"), "--as", "hr-copy")
    assert "Imported hr-copy" in out
    code, out, _ = gpts_cli("rm", "larkspur-hr", "--yes")
    assert code == 0
    code, out, _ = gpts_cli("list", "--json")
    assert [g["slug"] for g in json.loads(out)] == ["hr-copy"]
    code, out, _ = gpts_cli("conversations", "--json")
    assert json.loads(out)[0]["slug"] == "larkspur-hr"  # kept after the GPT went


def test_create_from_flags(gpts_cli, model_dir, tmp_path):
    (tmp_path / "notes.md").write_text("Standup is at 9:30.\n")
    (tmp_path / "examples.jsonl").write_text(json.dumps({"messages": [
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "When is lunch?"},
        {"role": "assistant", "content": "At noon."}]}) + "\n")
    code, out, err = gpts_cli("create", "--name", "Team notes", "--instructions", "Answer from the notes.",
                              "--model", str(model_dir), "--knowledge", "notes.md", "--starter", "When is standup?",
                              "--examples", "examples.jsonl", "--category", "productivity", "--tag", "team", "--json")
    assert code == 0, err
    gpt = json.loads(out)
    assert gpt["slug"] == "team-notes"
    assert gpt["spec"]["examples"] == [[{"role": "user", "content": "When is lunch?"},
                                        {"role": "assistant", "content": "At noon."}]]
    assert gpt["spec"]["conversation_starters"] == ["When is standup?"] and gpt["spec"]["tags"] == ["team"]


@pytest.mark.parametrize("args, message", [
    (["show", "nope"], "No GPT named 'nope'"),
    (["rate", "nope", "3"], "No GPT named 'nope'"),
    (["rate", "larkspur-hr", "6"], "Rate from 1 to 5"),
    (["run", "nope", "--message", "hi"], "No GPT named 'nope'"),
    (["create", "--spec", "hr.yaml"], "exists already"),
    (["create", "--instructions", "x"], "needs a name"),
    (["create", "--name", "X", "--category", "games"], "category"),
    (["create", "--name", "X", "--knowledge", "missing.md"], "missing.md"),
    (["create", "--name", "X", "--model", "no-such-model"], "no-such-model"),
    (["import", "hr.yaml"], "not a .gpt bundle"),
    (["conversations", "show"], "takes one conversation id"),
    (["list", "--sort", "stars"], "Unknown sort"),
])
def test_bad_input_is_a_clear_error(gpts_cli, hr_spec, args, message):
    assert gpts_cli("create", "--spec", str(hr_spec))[0] == 0
    code, out, err = gpts_cli(*args)
    assert code == 1
    assert message in err and "Traceback" not in err
    assert err.startswith("Error:")


@pytest.mark.parametrize("field, value, message", [
    ("name", "''", "name"),
    ("instructions", "'Hello {{user_name}}'", "unknown template variable {{user_name}}"),
    ("conversation_starters", "[a, b, c, d, e]", "conversation_starters"),
    ("examples", "[[{role: user, content: hi}]]", "must alternate user and assistant"),
    ("category", "games", "category"),
    ("visibility", "everyone", "visibility"),
    ("retrieval", "{chunk_tokens: 100, overlap_tokens: 80}", "overlap_tokens (80) must be at most half"),
    ("generation", "{temprature: 0.2}", "generation.temprature: not a known field; the fields are temperature"),
    ("generation", "{max_tokens: -5}", "generation.max_tokens"),
    ("instructions", "'Hello {{gpt_name|upper}}'", "unknown template variable {{gpt_name|upper}}"),
    ("slug", "'Not A Slug'", "slug"),
    ("colour", "blue", "colour: not a known field"),
])
def test_an_invalid_spec_names_the_field(gpts_cli, tmp_path, field, value, message):
    (tmp_path / "bad.yaml").write_text(f"name: Bad\n{field}: {value}\n")
    code, out, err = gpts_cli("create", "--spec", "bad.yaml")
    assert code == 1
    assert "bad.yaml" in err and message in err
    assert connect().execute("SELECT count(*) FROM gpts").fetchone()[0] == 0


def test_the_ready_gpts_install_on_first_use(monkeypatch, capsys, bundled_gguf):
    code, out, err = run(monkeypatch, capsys, "featured", "--json")
    assert code == 0, err
    featured = {g["slug"]: g for g in json.loads(out)}
    assert set(featured) == {"french-translator", "review-sentiment", "gpts-tutor", "story-starter"}
    assert featured["gpts-tutor"]["files"][0]["name"] == "gpts-guide.md"
    assert featured["gpts-tutor"]["files"][0]["chunks"] >= 5
    assert len(featured["story-starter"]["spec"]["conversation_starters"]) == 4
    assert len(featured["review-sentiment"]["spec"]["examples"]) == 4
    run(monkeypatch, capsys, "rm", "story-starter", "--yes")
    code, out, _ = run(monkeypatch, capsys, "list", "--json")
    assert "story-starter" not in out  # installed once: a removed one stays removed


def test_ollama_modelfile_in_and_out(gpts_cli, model_dir, tmp_path):
    import shutil

    shutil.copytree(model_dir, tmp_path / "model")
    (tmp_path / "Modelfile").write_text('''# an assistant made for Ollama
FROM ./model
SYSTEM """You are Mario from Super Mario Bros.
Answer as Mario, the assistant, only."""
PARAMETER temperature 0.7
PARAMETER num_ctx 4096
PARAMETER stop "<|user|>"
TEMPLATE """{{ .Prompt }}"""
MESSAGE user Who are you?
MESSAGE assistant It's-a me, Mario!
''')
    code, out, err = gpts_cli("import", "Modelfile", "--as", "mario")
    assert code == 0, err
    assert "num_ctx" in err and "TEMPLATE" in err  # what gpts has no use for is said, not silently dropped
    code, out, _ = gpts_cli("show", "mario", "--json")
    spec = json.loads(out)["spec"]
    assert spec["instructions"].startswith("You are Mario") and spec["model"] == str(tmp_path / "model")
    assert spec["generation"] == {"temperature": 0.7, "stop": ["<|user|>"]}
    assert spec["examples"] == [[{"role": "user", "content": "Who are you?"},
                                 {"role": "assistant", "content": "It's-a me, Mario!"}]]

    code, out, err = gpts_cli("export", "mario", "--ollama", "ollama-mario")
    assert code == 0, err
    exported = tmp_path / "ollama-mario"
    assert sorted(p.name for p in exported.iterdir()) == ["Modelfile", "mario.gguf"]
    assert (exported / "mario.gguf").read_bytes()[:4] == b"GGUF"
    code, out, err = gpts_cli("import", str(exported / "Modelfile"), "--as", "mario-again")
    assert code == 0, err
    code, out, _ = gpts_cli("show", "mario-again", "--json")
    again = json.loads(out)["spec"]
    assert {k: again[k] for k in ("instructions", "generation", "examples")} == \
        {k: spec[k] for k in ("instructions", "generation", "examples")}
    assert again["model"] == str(exported / "mario.gguf")


def test_a_gpt_is_measured_and_tuned(gpts_cli, model_dir, tmp_path):
    rows = [{"text": f"review number {i} is {'good' if i % 2 else 'bad'}", "label": "good" if i % 2 else "bad"}
            for i in range(8)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sentiment.yaml").write_text(f"""
name: Tiny sentiment
instructions: Answer good or bad.
examples:
  - [{{role: user, content: "review one is good"}}, {{role: assistant, content: good}}]
  - [{{role: user, content: "review two is bad"}}, {{role: assistant, content: bad}}]
model: {model_dir}
evaluation: eval.jsonl
""")
    assert gpts_cli("create", "--spec", "sentiment.yaml")[0] == 0

    code, out, err = gpts_cli("eval", "gpt", "tiny-sentiment", "--json")
    assert code == 0, err
    measured = json.loads(out)
    assert (measured["kind"], measured["metric"], measured["n"], measured["version"]) == ("classify", "accuracy", 8, 1)
    code, out, err = gpts_cli("eval", "classify", "eval.jsonl", "--model", "tiny-sentiment", "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == measured["score"]  # the same prompt, whichever way it is asked
    code, out, err = gpts_cli("eval", "generate", "examples.jsonl", "--model", "gpt:no-such-gpt")
    assert code == 1 and "No GPT named 'no-such-gpt'" in err

    code, out, err = gpts_cli("tune", "tiny-sentiment", "--max-steps", "1", "--json")
    assert code == 0, err
    tuned = json.loads(out)
    assert tuned["version"] == 2 and tuned["examples"] == 2
    assert tuned["before"]["score"] == measured["score"] and tuned["after"]["n"] == 8
    code, out, _ = gpts_cli("show", "tiny-sentiment", "--json")
    shown = json.loads(out)
    assert shown["spec"]["model"] == tuned["adapter"] and shown["score"]["score"] == tuned["after"]["score"]
    assert shown["files"] == [f for f in json.loads(gpts_cli("show", "tiny-sentiment", "--version", "1", "--json")[1])[
        "files"]]  # the evaluation set carries over
    code, out, err = gpts_cli("export", "tiny-sentiment", "--out", "tuned.gpt")
    assert code == 0, err
    code, out, err = gpts_cli("import", "tuned.gpt", "--as", "tuned-copy")
    assert code == 0, err
    code, out, _ = gpts_cli("show", "tuned-copy", "--json")
    assert "adapters" in json.loads(out)["spec"]["model"]  # the adapter came along, kept in the store


def test_create_step_by_step(gpts_cli, model_dir, monkeypatch):
    import io

    answers = ["Helper", "Helps.", "Be helpful.", str(model_dir), "", "Say hello"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(answers) + "\n"))
    code, out, err = gpts_cli("create")
    assert code == 0, err
    assert "Created helper" in err and "Preview: Say hello" in err
    code, out, _ = gpts_cli("show", "helper", "--json")
    spec = json.loads(out)["spec"]
    assert (spec["description"], spec["instructions"], spec["conversation_starters"]) == ("Helps.", "Be helpful.",
                                                                                          ["Say hello"])
