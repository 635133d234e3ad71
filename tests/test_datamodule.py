"""AgentRDataModule: expert demos, regeneration (one rank and two), splits, chat mixing, CLI types."""

from __future__ import annotations

import json

import pytest
from search_fakes import CloneToyEnv, ScriptedEngine, judge_bad_on, toy_policy

from agentr.agent.conversation import HEADER_LEN, SYSTEM_PROMPT
from agentr.agent.turn import parse_action
from agentr.data.base import AgentRDataModule
from agentr.data.datamodule import HTTPDataModule, TextCraftDataModule
from agentr.data.tokenize import IGNORE_INDEX
from agentr.envs.textcraft import TextCraftEnv
from agentr.errors import SettingError
from agentr.search.config import SearchConfig
from agentr.trajectory import Trajectory, read_jsonl


class ToyDataModule(AgentRDataModule):
    """What a user writes for a new environment: one method."""

    def make_env(self):
        return CloneToyEnv(need=2, tasks=6)


def toy_engine():
    return ScriptedEngine(toy_policy(), judge_bad_on("noop", "lose", "half", "boom"))


SEARCH = SearchConfig(num_simulations=4, n_expand=4, max_depth=5)


def test_textcraft_expert_trajectories_replay_to_success(tiny_model_dir):
    dm = TextCraftDataModule(model=tiny_model_dir, max_depth=2, seed=3)
    demos = dm.expert_trajectories(8)
    assert len(demos) == 8 and len({d.task_id for d in demos}) == 8
    train_ids = set(TextCraftEnv(max_depth=2).task_ids("train"))
    for demo in demos:
        assert demo.kind == "expert" and demo.iteration == 0 and demo.task_id in train_ids
        header, turns = demo.messages[:HEADER_LEN], demo.messages[HEADER_LEN:]
        assert header[0]["content"] == SYSTEM_PROMPT and not any(m["train"] for m in header)
        assert all(m["train"] == (m["role"] == "assistant") for m in turns)
        env = TextCraftEnv(max_depth=2)
        assert env.reset(demo.task_id) == header[3]["content"]
        goal = env.goal_of(demo.task_id)
        reward = 0.0
        for m in turns:
            if m["role"] == "assistant":
                assert m["content"].startswith("Thought: ") and goal in m["content"]
                _, reward, _ = env.step(parse_action(m["content"]))
        assert reward == 1.0
    # Thoughts track the inventory.
    assert "I have nothing" in demos[0].messages[HEADER_LEN]["content"]
    assert demos == TextCraftDataModule(model=tiny_model_dir, max_depth=2, seed=3).expert_trajectories(8)


def test_set_trajectories_splits_by_task_drops_long_and_mixes_chat(tiny_model_dir, tmp_path, caplog):
    demos = TextCraftDataModule(model=tiny_model_dir, max_depth=2).expert_trajectories(20)
    long_one = Trajectory(id="long", env="textcraft", task_id="9999", iteration=0, kind="expert",
                          messages=demos[0].messages + [{"role": "user", "content": "x " * 3000},
                                                        {"role": "assistant", "content": "Action: y", "train": True}])
    chat_file = tmp_path / "chat.jsonl"
    with open(chat_file, "w") as f:
        for i in range(50):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                             {"role": "assistant", "content": f"answer {i}"}]}) + "\n")
        f.write(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}) + "\n")
    dm = TextCraftDataModule(model=tiny_model_dir, max_depth=2, max_length=1500, tokens_per_batch=3000,
                             val_fraction=0.2, chat_data=str(chat_file), chat_ratio=0.2)
    with caplog.at_level("WARNING"):
        dm.set_trajectories(demos + [long_one])
    assert "dropped 1 of" in caplog.text and "longer than max_length=1500" in caplog.text
    stats = dm.data_stats
    assert stats["train"]["too_long"] + stats["val"]["too_long"] == 1
    val_tasks = {e.task_id for e in dm.val_examples}
    train_tasks = {e.task_id for e in dm.train_examples if e.kind != "chat"}
    assert len(val_tasks) == 4 and not val_tasks & train_tasks  # 20% of 21 tasks, held out whole
    kinds = stats["train_kinds"]
    assert kinds["chat"] == round(kinds["expert"] * 0.2 / 0.8)  # chat is 20% of training conversations
    assert all(e.kind != "chat" for e in dm.val_examples)
    chat = next(e for e in dm.train_examples if e.kind == "chat")
    trained = dm.tokenizer.decode([t for t in chat.labels if t != IGNORE_INDEX])
    assert trained.startswith("answer ") and trained.endswith("<|im_end|>")
    # The loaders serve exactly these conversations, packed without padding.
    batches = list(dm.train_dataloader())
    assert sum(len(b["doc_lens"]) for b in batches) == len(dm.train_examples)
    assert all(b["input_ids"].shape[1] <= 3000 for b in batches) and len(batches) == dm.num_train_batches
    assert sum(b["input_ids"].shape[1] for b in dm.val_dataloader()) == sum(len(e) for e in dm.val_examples)
    assert "padding 0.0%" in stats["train_batches"]


def test_unpacked_mode_reports_padding(tiny_model_dir):
    dm = TextCraftDataModule(model=tiny_model_dir, max_depth=2, packing=False, batch_size=4, val_fraction=0)
    dm.set_trajectories(dm.expert_trajectories(8))
    batches = list(dm.train_dataloader())
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4]
    assert dm.val_dataloader() == []
    padding = float(dm.data_stats["train_batches"].split("padding ")[1].rstrip("%"))
    assert padding > 0


def test_regenerate_runs_phase_one_and_trains_all_of_it(tiny_model_dir, tmp_path, caplog):
    dm = ToyDataModule(model=tiny_model_dir, search=SEARCH, val_fraction=0.2, num_tasks=3)
    with caplog.at_level("INFO", logger="agentr.data.base"):
        path = dm.regenerate(toy_engine(), iteration=1, alpha=0.5, out_dir=tmp_path)
    trajectories = list(read_jsonl(path))
    assert {t.kind for t in trajectories} >= {"revision", "good"}
    assert len({t.task_id for t in trajectories}) == 3  # three tasks, each with data
    # Phase I data is trained whole: val_fraction holds out expert demonstrations only
    assert len(dm.train_examples) == len(trajectories) and dm.val_examples == [] and dm.data_version == 1
    stats = dm.data_stats
    assert (stats["trajectories"], stats["trained"], stats["validated"], stats["trimmed"]) == \
        (len(trajectories), len(trajectories), 0, 0)
    assert stats["dropped"] == {"too_long": 0, "untrained": 0}
    assert f"{len(trajectories)} trajectories: {len(trajectories)} trained" in caplog.text
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] == 1


def test_validation_holds_out_expert_demonstrations_only(tiny_model_dir):
    dm = TextCraftDataModule(model=tiny_model_dir, max_depth=2, val_fraction=0.25)
    demos = dm.expert_trajectories(8)
    phase1 = [Trajectory(id=f"textcraft/{d.task_id}/good/0", env="textcraft", task_id=d.task_id, iteration=1,
                         kind="good", messages=d.messages) for d in demos]
    dm.set_trajectories(demos + phase1)
    val_tasks = {e.task_id for e in dm.val_examples}
    assert len(val_tasks) == 2 and {e.kind for e in dm.val_examples} == {"expert"}
    assert sum(e.kind == "good" for e in dm.train_examples) == 8  # the same tasks' Phase I data: all trained
    assert (dm.data_stats["trained"], dm.data_stats["validated"]) == (14, 2)


def test_too_long_revision_trajectories_are_trimmed_not_dropped(tiny_model_dir):
    dm = ToyDataModule(model=tiny_model_dir, max_length=200, tokens_per_batch=400, val_fraction=0)
    header = [{"role": "system", "content": "Play.", "train": False}, {"role": "user", "content": "Say good.", "train": False},
              {"role": "assistant", "content": "OK", "train": False}, {"role": "user", "content": "Task t0.", "train": False}]
    bad = [m for i in range(12) for m in ({"role": "assistant", "content": f"Thought: try {i}\nAction: noop", "train": False},
                                          {"role": "user", "content": f"Nothing happens, attempt {i}. " + "wait " * 10, "train": False})]
    good = [{"role": "assistant", "content": "Thought: Oops.\nAction: revise", "train": True},
            {"role": "user", "content": "OK.", "train": False},
            {"role": "assistant", "content": "Thought: go\nAction: good", "train": True},
            {"role": "user", "content": "You win.", "train": False}]
    revision = Trajectory(id="r", env="toy", task_id="t0", iteration=1, kind="revision", messages=header + bad + good)
    hopeless = Trajectory(id="h", env="toy", task_id="t1", iteration=1, kind="good",
                          messages=header[:3] + [{"role": "user", "content": "x " * 400, "train": False}] + good)
    dm.set_trajectories([revision, hopeless])
    [example] = dm.train_examples
    assert example.id == "r" and len(example) <= 200
    text = dm.tokenizer.decode(example.input_ids)
    assert text.count("Play.") == 1 and "Task t0." in text  # the header stays
    assert "Action: revise" in text and "You win." in text  # so does everything trained
    assert "try 0" not in text and "try 11" in text  # the oldest untrained turns went first
    stats = dm.data_stats
    assert (stats["trained"], stats["trimmed"], stats["dropped"]["too_long"]) == (1, 1, 1)
    dropped = stats["train"]["trimmed_turns"]
    assert 0 < dropped < 12 and f"try {dropped - 1}\n" not in text and f"try {dropped}\n" in text


def test_missing_data_is_a_clear_error(tiny_model_dir):
    with pytest.raises(RuntimeError, match="no training data"):
        ToyDataModule(model=tiny_model_dir).train_dataloader()
    with pytest.raises(NotImplementedError, match="make_env"):
        AgentRDataModule(model=tiny_model_dir).task_ids("train")
    with pytest.raises(ValueError, match="tokens_per_batch"):
        ToyDataModule(model=tiny_model_dir, max_length=4096, tokens_per_batch=2048)


def test_data_files_are_loaded_in_setup(tiny_model_dir, tmp_path):
    from agentr.trajectory import write_jsonl_atomic

    demos = TextCraftDataModule(model=tiny_model_dir, max_depth=2).expert_trajectories(5)
    path = write_jsonl_atomic(tmp_path / "demos.jsonl", demos)
    dm = TextCraftDataModule(model=tiny_model_dir, data_files=[str(path)], val_fraction=0)
    dm.setup("fit")
    assert [e.id for e in sorted(dm.train_examples, key=lambda e: e.id)] == sorted(d.id for d in demos)


def test_lightning_cli_parses_module_and_datamodules(tiny_model_dir, tmp_path):
    """Typed constructors become `--model.X` / `--data.X` flags, subclasses by class_path."""
    from lightning.pytorch.cli import LightningCLI

    from agentr.training.module import AgentRModule

    cli = LightningCLI(
        AgentRModule, AgentRDataModule, subclass_mode_data=True, run=False,
        args=["--model.model", tiny_model_dir, "--model.lora_r", "8", "--model.lora_target_modules", "[q_proj,v_proj]",
              "--data.class_path", "agentr.data.datamodule.TextCraftDataModule", "--data.init_args.max_depth", "2",
              "--data.init_args.model", tiny_model_dir, "--data.init_args.search.num_simulations", "3",
              "--data.init_args.chat_ratio", "0.1", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path)],
    )
    assert cli.model.hparams.lora_r == 8 and cli.model.hparams.lora_target_modules == ["q_proj", "v_proj"]
    assert isinstance(cli.datamodule, TextCraftDataModule) and cli.datamodule.max_depth == 2
    assert cli.datamodule.search.num_simulations == 3 and cli.datamodule.chat_ratio == 0.1


def test_http_datamodule_builds_the_remote_environment():
    dm = HTTPDataModule(url="localhost:9", env_name="textcraft", train_ids=["1", "2"], test_ids=["3"],
                        instruction="Craft.")
    env = dm.make_env()
    assert env.url == "http://localhost:9" and env.task_ids("train") == ["1", "2"] and env.instruction == "Craft."


def test_http_task_ids_may_be_given_as_ranges():
    ranges = HTTPDataModule(url="localhost:9", train_ids="3-5,9, 11-11", test_ids="0-1").make_env()
    assert ranges.task_ids("train") == ["3", "4", "5", "9", "11"] and ranges.task_ids("test") == ["0", "1"]
    listed = HTTPDataModule(url="localhost:9", train_ids=["3", "4", "5", "9", "11"], test_ids=["0", "1"])
    assert listed.split_ids == HTTPDataModule(url="localhost:9", train_ids="3-5,9,11", test_ids="0-1").split_ids
    for bad in ("5-3", "a-b", "1-", "-4", "2.5"):
        with pytest.raises(SettingError, match=f"task ids '{bad}': '{bad}' is neither an integer nor a range"):
            HTTPDataModule(url="localhost:9", train_ids=bad)


def test_oracle_transition_is_refused_at_setup_for_an_environment_without_labels(tiny_model_dir):
    oracle = SearchConfig(num_simulations=1, transition="oracle")
    with pytest.raises(ValueError, match="transition 'oracle' needs an environment that labels mistakes"):
        ToyDataModule(model=tiny_model_dir, search=oracle).setup("fit")
    TextCraftDataModule(model=tiny_model_dir, max_depth=1, search=oracle).setup("fit")  # TextCraft labels
    ToyDataModule(model=tiny_model_dir, search=SearchConfig(transition="end")).setup("fit")


def test_http_datamodule_passes_its_revision_action_on():
    env = HTTPDataModule(url="localhost:9", revision_action="reflect").make_env()
    assert env.revision_action == "reflect"
    assert HTTPDataModule(url="localhost:9").make_env().revision_action == "revise"


def test_an_expert_thought_override_on_the_datamodule_is_refused():
    with pytest.raises(TypeError, match="define `expert_thought\\(actions, step\\)` on your Environment"):
        class Old(AgentRDataModule):  # noqa: F841 - the class statement itself must fail
            def expert_thought(self, actions, step):
                return "old"
