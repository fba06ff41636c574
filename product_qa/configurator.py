"""Command-line overrides of config.py, in the spirit of nanoGPT's configurator: `--set data.seed=7`."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import os
import sys
import typing
from typing import TYPE_CHECKING, Any

import orjson

from product_qa.errors import UserError
from product_qa.settings import SECTION_CHECKS, check_config, expected, fits, shown

if TYPE_CHECKING:
    from config import Config


def stage_parser(description: str) -> argparse.ArgumentParser:
    """The flags every stage script shares: --data, --no-progress and --set."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="raw input file (default: data.raw_path in config.py)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_override_argument(parser)
    return parser


def config_from_args(config: Config, args: argparse.Namespace) -> Config:
    """The config with the --set overrides and --data applied; --no-progress also silences the libraries' bars."""
    apply_overrides(config, args.overrides)
    if getattr(args, "no_progress", False):
        silence_library_progress_bars()
    if args.data:
        config.data.raw_path = args.data
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


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Set each `section.field=value` on the config dataclass tree, checking the field exists and the type fits."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {shown(item)}: expected SECTION.FIELD=VALUE")
        *path, name = key.strip().split(".")
        target = config
        for part in path:
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise UserError(f"--set {shown(item)}: unknown section {shown(part)}; sections: "
                                f"{_field_names(config)}")
            target = getattr(target, part)
        if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
            raise UserError(f"--set {shown(item)}: unknown setting {shown(name)}; settings here: "
                            f"{_field_names(target)}")
        annotation = typing.get_type_hints(type(target))[name]
        value = _parse_value(raw.strip(), item)
        if isinstance(value, int) and not isinstance(value, bool) and annotation is float:
            value = float(value)
        if not fits(annotation, value):
            quote = f" (a text that reads as a number: quote it, --set '{key.strip()}=\"{raw.strip()}\"')" if (
                fits(annotation, raw.strip()) and not isinstance(value, str)) else ""
            raise UserError(f"--set {shown(item)}: {shown(value)} is not {expected(annotation)}{quote}")
        setattr(target, name, value)
    if dataclasses.is_dataclass(config) and all(hasattr(config, s) for s in SECTION_CHECKS):
        check_config(config)  # ranges and rules between settings, before any work starts
    return config


def _field_names(obj: Any) -> str:
    return ", ".join(f.name for f in dataclasses.fields(obj)) if dataclasses.is_dataclass(obj) else "(none)"


def config_dict(config: Any) -> dict:  # Config or any of its sections
    return dataclasses.asdict(config)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serializable parts (configs, input file stats, pipeline versions)."""
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=12).hexdigest()
