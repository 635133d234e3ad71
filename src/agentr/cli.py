"""The `agentr` command.

`agentr fit|validate --config X.yaml` is a LightningCLI over `AgentRModule` and any
`AgentRDataModule` subclass (named by `class_path`). The other subcommands run one step alone,
each a typed function whose docstring is its `--help`:

    agentr collect    Phase I only: MCTS revision data for a model, written as JSONL
    agentr evaluate   success rate, reward and loop metric of a model or adapter on a split
    agentr report     the HTML report of a run directory (trees, trajectories, learning curve)
    agentr serve-env  serve an agentr environment over HTTP (AgentGym protocol)
    agentr compare    paired difference of two evaluations (or runs, stage by stage)
    agentr textcraft-goals  the goal of each task id of a running AgentGym TextCraft server

Errors a user can act on (a setting out of range, a malformed config file, an output directory
made from another model, a dead environment) end the command with one line on stderr and exit
status 2 (bad input) or 1, instead of a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

#: Subcommands outside LightningCLI: name -> "module:function".
STAGE_COMMANDS = {
    "collect": "agentr.commands.collect:collect_command",
    "evaluate": "agentr.commands.evaluate:evaluate_command",
    "report": "agentr.commands.report:report_command",
    "serve-env": "agentr.commands.serve_env:serve_command",
    "compare": "agentr.commands.compare:compare_command",
    "textcraft-goals": "agentr.commands.textcraft_goals:textcraft_goals_command",
}

#: Subcommands whose required arguments are positional (`agentr report RUN_DIR`, `agentr compare A B`).
POSITIONAL = {"report", "compare"}


def _stage_function(name: str):
    module, function = STAGE_COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)


def sweep_run_dir(root: str | None, environ: Mapping[str, str]) -> str | None:
    """The run's own directory under a W&B sweep agent, `<root>/<sweep id>/<run id>` (None
    outside a sweep): every run of a sweep starts from the same config, and sharing its
    `default_root_dir` would make each run resume the previous one's checkpoint."""
    sweep, run = environ.get("WANDB_SWEEP_ID"), environ.get("WANDB_RUN_ID")
    if not sweep or not run:
        return None
    return str(Path(root or ".") / sweep / run)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `agentr` console script; `args` defaults to `sys.argv[1:]`."""
    from agentr.errors import SettingError
    from agentr.overlays import with_merged_callbacks
    from agentr.verbosity import configure_logging, verbose_requested

    verbose, argv = verbose_requested(list(sys.argv[1:] if args is None else args))
    configure_logging(verbose)
    try:  # the console script passes main()'s result to sys.exit: None exits 0
        documents = _read_config_files(argv)
        if not (argv and argv[0] in STAGE_COMMANDS):
            argv = with_merged_callbacks(argv, documents)
        if args is None:  # LightningCLI reads sys.argv itself (and warns when given both)
            sys.argv[1:] = argv
        _run(argv, args, verbose)
    except Exception as error:
        reported = _user_error(error)
        if reported is None:
            raise
        print(f"agentr: error: {reported}", file=sys.stderr)
        sys.exit(2 if isinstance(reported, SettingError) else 1)


def _user_error(error: BaseException) -> Exception | None:
    """The agentr error (`agentr.errors`, or an unreachable environment server) that caused
    `error`, if any: the parser and Lightning wrap the errors of the classes they build."""
    from agentr.envs.http import HTTPEnvError
    from agentr.errors import (
        DirectoryInUseError,
        InfrastructureError,
        NoTrainingData,
        ProvenanceError,
        SettingError,
    )

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (SettingError, ProvenanceError, InfrastructureError, NoTrainingData,
                              HTTPEnvError, DirectoryInUseError)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _read_config_files(argv: list[str]) -> list[tuple[int, str, object]]:
    """The `--config` files of `argv` that are files, in order, as (index of their `--config`
    argument, path, contents). Raises `SettingError` naming the file when one is not valid YAML
    (the parser would report it as "<unicode string>")."""
    import yaml

    from agentr.errors import SettingError

    paths = [(i, argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [(i, a.split("=", 1)[1]) for i, a in enumerate(argv) if a.startswith("--config=")]
    documents = []
    for index, path in sorted(paths):
        try:
            with open(path, encoding="utf-8") as f:
                documents.append((index, path, yaml.safe_load(f)))
        except OSError:
            continue  # not a file (a config given inline): the parser reports it
        except yaml.YAMLError as error:
            where = ""
            mark = getattr(error, "problem_mark", None)
            if mark is not None:
                where = f":{mark.line + 1}:{mark.column + 1}"
            problem = getattr(error, "problem", None) or str(error)
            raise SettingError(f"{path}{where}: not valid YAML ({problem})") from None
    return documents


def _run(argv: list[str], args: list[str] | None, verbose: bool) -> None:
    if argv and argv[0] in STAGE_COMMANDS:
        from jsonargparse import CLI

        CLI(_stage_function(argv[0]), args=argv[1:], as_positional=argv[0] in POSITIONAL,
            parser_class=_stage_parser())
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n", file=sys.stderr)
    _lightning_cli(None if args is None else argv, verbose)


def unknown_key_message(message: str, parser, subcommand: str | None = None) -> str | None:
    """The parser's error `message` as one line that names the unknown key first, with the
    closest key accepted there (None: the message is about something else). `subcommand`: the
    one being parsed, where the message does not say (a key given on the command line)."""
    import difflib
    import re

    in_class = re.search(r"Parser key \"([^\"]+)\".*?class_path '([^']+)'.*?Option '([^']+)' is not "
                         r"accepted", message, re.S)
    in_parser = re.search(r"(Subcommand '([^']+)'|Group '[^']+') does not accept option '([^']+)'",
                          message)
    on_command_line = re.search(r"unrecognized arguments: --?([^\s=]+)", message)
    in_file = re.search(r"Option '([^']+)' is not accepted", message)
    if in_class is not None:  # an init argument of a class named by class_path (data: ...)
        where, class_path, name = in_class.groups()
        key = f"{where}.init_args.{name}"
        known = [f"{where}.init_args.{k}" for k in _init_keys(class_path)]
        detail = f"{class_path} has no argument {name!r}"
    elif in_parser is not None:
        _, named_subcommand, key = in_parser.groups()
        detail = in_parser.group(0)
        known = _keys(parser, named_subcommand or subcommand)
    elif on_command_line is not None or in_file is not None:
        key = (on_command_line or in_file).group(1)
        detail = "given on the command line" if on_command_line is not None else "in a config file"
        known = _keys(parser, subcommand)
    else:
        return None
    close = difflib.get_close_matches(key, known, n=1)
    hint = f", did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint} ({detail}; see --help)"


def _keys(parser, subcommand: str | None) -> list[str]:
    """The keys `parser` accepts, or its subcommand's."""
    if subcommand is not None and getattr(parser, "_subcommands_action", None) is not None:
        parser = parser._subcommands_action._name_parser_map.get(subcommand, parser)
    return [a.dest for a in getattr(parser, "_actions", [])]


def _init_keys(class_path: str) -> list[str]:
    """The init arguments of the class at `class_path`, as jsonargparse reads them ([]: none found)."""
    from jsonargparse import ArgumentParser

    module, _, name = class_path.rpartition(".")
    try:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError, ValueError):  # only a hint is lost
        return []
    return [a.dest for a in parser._actions]


def _stage_parser():
    """The parser class of the stage commands: an unknown key is a `SettingError` naming it."""
    from jsonargparse import ArgumentParser

    from agentr.errors import SettingError

    class StageParser(ArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            named = unknown_key_message(message, self)
            if named is not None:
                raise SettingError(named) from None
            super().error(message, ex)

    return StageParser


def check_checkpoint(path: Path, run_dir: str | Path) -> None:
    """Raise `ProvenanceError` when the checkpoint a fit would resume from is truncated or
    corrupt (torch checkpoints are zip files: a cut one has no central directory)."""
    from agentr.errors import ProvenanceError

    if not path.is_file():
        return
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as error:
        raise ProvenanceError(
            f"{path} is truncated or corrupt ({error}), so the run cannot continue from it; "
            f"start afresh: delete {run_dir} or choose another trainer.default_root_dir") from None


def check_strategy(strategy) -> None:
    """Raise `SettingError` for `trainer.strategy` given as a bare class path: Lightning reads
    any string as a registered strategy's name and refuses it, lower-cased, only when the
    Trainer is built."""
    from agentr.errors import SettingError

    if isinstance(strategy, str) and "." in strategy:
        raise SettingError(
            f"trainer.strategy: {strategy!r} is read as a strategy name, not a class; write "
            f"strategy: {{class_path: {strategy}}}")


def _lightning_cli(args: list[str] | None, verbose: bool = False, run: bool = True):
    """LightningCLI over the module and any DataModule subclass; `args` None reads `sys.argv`.
    `run=False` builds the module, data and Trainer from `args` (no subcommand) and runs nothing."""
    from lightning.pytorch.cli import LightningCLI

    from agentr.verbosity import quiet_libraries

    if not verbose:
        quiet_libraries()  # importing Lightning set its own level to INFO

    from agentr.data.base import AgentRDataModule
    from agentr.errors import SettingError
    from agentr.training.module import AgentRModule

    class AgentRCLI(LightningCLI):
        """LightningCLI whose `fit` resumes from `<default_root_dir>/checkpoints/last.ckpt`."""

        def add_arguments_to_parser(self, parser) -> None:
            # The data is rendered with the trained model's tokenizer: one setting, not two.
            parser.link_arguments("model.model", "data.init_args.model")

        def parse_arguments(self, parser, args) -> None:
            from argparse import ArgumentError

            try:
                super().parse_arguments(parser, args)
            except ArgumentError as error:
                given = args if isinstance(args, list) else sys.argv[1:]
                message = unknown_key_message(str(error), parser, given[0] if given else None)
                if message is not None:
                    raise SettingError(message) from None
                parser.exit_on_error = True  # any other parse error: the parser's usage and message
                parser.error(str(error), error.__cause__)

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            check_strategy(config.trainer.strategy)
            own_dir = sweep_run_dir(config.trainer.default_root_dir, os.environ)
            if own_dir is not None:
                config.trainer.default_root_dir = own_dir

        def before_fit(self) -> None:
            checkpoint = self.trainer.checkpoint_callback
            if checkpoint is not None and checkpoint.dirpath is None:
                checkpoint.dirpath = str(Path(self.trainer.default_root_dir) / "checkpoints")
                checkpoint.save_last = True

        def fit(self, model, datamodule=None, ckpt_path=None, **kwargs) -> None:
            # Re-running the same command continues a killed run instead of starting over. The
            # checkpoint holds tensors and plain data only: never unpickle code from it.
            checkpoint = self.trainer.checkpoint_callback
            if ckpt_path is None and checkpoint is not None and checkpoint.dirpath is not None:
                check_checkpoint(Path(checkpoint.dirpath) / "last.ckpt", self.trainer.default_root_dir)
            if kwargs.get("weights_only") is None:
                kwargs["weights_only"] = True
            self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path or "last", **kwargs)

    return AgentRCLI(
        AgentRModule,
        AgentRDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},  # parse_arguments names an unknown key first
        auto_configure_optimizers=False,  # the module owns its optimizer and schedule
    )


if __name__ == "__main__":
    main()
