"""config.py overrides from the command line (--set section.field=value)."""
import pytest

from config import Config
from product_qa.configurator import apply_overrides, fingerprint
from product_qa.errors import UserError


def test_overrides_parse_python_literals_and_bare_strings():
    cfg = apply_overrides(Config(), ["data.max_records=50000", "data.test_fraction=0.1", "data.output_dir=/tmp/x",
                                     "data.dedupe_titles=False", "data.validation_fraction=0"])
    assert cfg.data.max_records == 50000
    assert cfg.data.test_fraction == 0.1
    assert cfg.data.output_dir == "/tmp/x"
    assert cfg.data.dedupe_titles is False
    assert cfg.data.validation_fraction == 0.0 and isinstance(cfg.data.validation_fraction, float)
    assert apply_overrides(Config(), ["data.max_records=None"]).data.max_records is None


def test_overrides_do_not_leak_between_configs():
    apply_overrides(Config(), ["data.seed=7"])
    assert Config().data.seed == 42


@pytest.mark.parametrize("override, message", [
    ("data.max_record=5", "unknown setting 'max_record'"),
    ("dta.seed=5", "unknown section 'dta'"),
    ("data.seed=abc", "not a valid int"),
    ("data.seed=1.5", "not a valid int"),
    ("data.dedupe_titles=1", "not a valid bool"),
    ("data.seed", "expected SECTION.FIELD=VALUE"),
])
def test_bad_overrides_give_clear_errors(override, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(Config(), [override])


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
