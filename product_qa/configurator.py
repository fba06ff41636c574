"""Command-line overrides of config.py, in the spirit of nanoGPT's configurator: `--set data.seed=7`, and
settings files (`--config FILE`: a run's config.json or a TOML file of overrides)."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import os
import sys
import tomllib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from product_qa.errors import UserError
from product_qa.io_utils import read_json
from product_qa.settings import SECTION_CHECKS, check_config, expected, fits, shown
from product_qa.settings_doc import settings_help

if TYPE_CHECKING:
    from config import Config


def stage_parser(description: str, sections: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """The flags every stage script shares (--data, --no-progress, --config and --set); --help then lists the
    settings the stage reads, `sections` (config.py's sections, or section.field), with defaults and meanings."""
    parser = argparse.ArgumentParser(description=description, epilog=settings_help(sections) if sections else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="raw input file (default: data.raw_path in config.py)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="settings from FILE, over config.py's and under --set's: a run's config.json (every "
                             "setting of that run) or a TOML file of overrides ([train] then epochs = 2)")
    add_override_argument(parser)
    return parser


def config_from_args(config: Config, args: argparse.Namespace) -> Config:
    """The config with --config's file, the --set overrides and --data applied, each over the one before, then
    checked; --no-progress also silences the libraries' bars."""
    if args.config is not None:
        apply_settings_file(config, args.config)
    apply_overrides(config, args.overrides, check=False)
    if getattr(args, "no_progress", False):
        silence_library_progress_bars()
    if args.data:
        config.data.raw_path = args.data
    try:
        check_config(config)  # ranges and rules between settings, before any work starts
    except UserError as err:
        if args.config is None:
            raise
        raise UserError(f"{err} (with the settings of {args.config})") from None
    return config


def silence_library_progress_bars() -> None:
    """The Hugging Face libraries' own bars off ("Loading weights" would add lines to a one-line error). The
    environment variable is read when huggingface_hub is first imported, so the stage does not pay for importing
    transformers here; libraries imported already are told directly."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def positive_int(text: str) -> int:
    """An argparse type: a count of at least 1 (argparse then says which flag is wrong, in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of counts, e.g. 1,8,16."""
    return [positive_int(part) for part in text.split(",")]


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one value of config.py for this run (repeatable), e.g. --set data.max_records=50000",
    )


def _parse_value(text: str, item: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as outputs/data
    except (RecursionError, MemoryError):  # thousands of nested operators ("-----...1"): Python's parser gives up
        raise UserError(f"--set {shown(item)}: the value nests too deeply to read ({len(text):,} characters)") from None


def apply_overrides(config: Config, overrides: list[str], *, check: bool = True) -> Config:
    """Set each `section.field=value` on the config dataclass tree, checking the field exists and the type fits;
    then (`check`) every setting's range and the rules between settings."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {shown(item)}: expected SECTION.FIELD=VALUE")
        where = f"--set {shown(item)}"
        target, name, annotation = _setting(config, key.strip(), where)
        value = _parse_value(raw.strip(), item)
        quote = f" (a text that reads as a number: quote it, --set '{key.strip()}=\"{raw.strip()}\"')" if (
            fits(annotation, raw.strip()) and not isinstance(value, str)) else ""
        _assign(target, name, annotation, value, where, quote)
    if check and dataclasses.is_dataclass(config) and all(hasattr(config, s) for s in SECTION_CHECKS):
        check_config(config)  # ranges and rules between settings, before any work starts
    return config


def _setting(config: Any, key: str, where: str, unknown_note: str = "") -> tuple[Any, str, Any]:
    """The section object, the field name and its annotation that `key` (section.field) names."""
    *path, name = key.split(".")
    target = config
    for part in path:
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise UserError(f"{where}: unknown section {shown(part)}; sections: {_field_names(config)}")
        target = getattr(target, part)
    if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
        raise UserError(f"{where}: unknown setting {shown(name)}{unknown_note}; settings here: "
                        f"{_field_names(target)}")
    return target, name, typing.get_type_hints(type(target))[name]


def _assign(target: Any, name: str, annotation: Any, value: Any, where: str, hint: str = "") -> None:
    if isinstance(value, int) and not isinstance(value, bool) and annotation is float:
        value = float(value)
    if not fits(annotation, value):
        raise UserError(f"{where}: {shown(value)} is not {expected(annotation)}{hint}")
    setattr(target, name, value)


def read_settings_file(path: Path) -> dict:
    """The sections of a settings file: a run's config.json (JSON), or a TOML file of [section] tables."""
    if path.suffix.lower() == ".json":
        settings = read_json(path, "settings file")
    elif path.suffix.lower() == ".toml":
        try:
            settings = tomllib.loads(path.read_bytes().decode("utf-8"))
        except OSError as err:
            raise UserError(f"{path}: cannot read the settings file ({err.strerror})") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise UserError(f"{path}: not a TOML file ({str(err).splitlines()[0][:160]})") from None
    else:
        raise UserError(f"{path}: settings come from a .json file (a run's config.json) or a .toml file")
    if not isinstance(settings, dict):
        raise UserError(f"{path}: not a settings object (sections of SETTING = VALUE)")
    return settings


def apply_settings_file(config: Config, path: Path) -> Config:
    """Every setting of the file set on the config, each checked as --set checks it (one line naming the file and
    the setting). A setting the file names that config.py no longer has (a run of an older version) is refused:
    the run could not be repeated as it was. model.trust_remote_code is never taken from a file, which may come
    from anywhere (a downloaded run folder): whether a model's code may run is config.py's or --set's to say."""
    for section_name, values in read_settings_file(path).items():
        if not isinstance(values, dict):
            raise UserError(f"{path}: {shown(section_name)} is not a section ([{section_name}] then SETTING = VALUE)"
                            if section_name in {f.name for f in dataclasses.fields(config)} else
                            f"{path}: unknown section {shown(section_name)}; sections: {_field_names(config)}")
        for name, value in values.items():
            key = f"{section_name}.{name}"
            target, field_name, annotation = _setting(
                config, key, f"{path}: {shown(key)}",
                " (a setting of an older version? run from a copy of the file without it)")
            if key == "model.trust_remote_code":
                if value is True and not config.model.trust_remote_code:
                    print(f"note: {path}: model.trust_remote_code=True not taken from the file; allow the model's "
                          "code yourself with --set model.trust_remote_code=True", file=sys.stderr)
                continue
            _assign(target, field_name, annotation, value, f"{path}: {key}")
    return config


def _field_names(obj: Any) -> str:
    return ", ".join(f.name for f in dataclasses.fields(obj)) if dataclasses.is_dataclass(obj) else "(none)"


def config_dict(config: Any) -> dict:  # Config or any of its sections
    return dataclasses.asdict(config)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serializable parts (configs, input file stats, pipeline versions)."""
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=12).hexdigest()
