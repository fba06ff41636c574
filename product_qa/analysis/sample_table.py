"""The analysis's reservoir sample as a table, one row per sampled record with what the pass measured of it:
sample.parquet, for pandas in a notebook (the report's figures come from the streamed pass, not from this)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from product_qa.analysis.cleaning_trace import FIELDS, RULE_ISSUES, TEXT_ISSUES
from product_qa.data.cleaning import CLEANING_RULES

if TYPE_CHECKING:
    import pandas as pd

    from product_qa.analysis.statistics import SampledRecord, Totals
    from product_qa.analysis.tokens import TokenFigures

SAMPLE_TABLE = "sample.parquet"
_RULE_BITS = {name: bit for bit, (name, _) in enumerate(CLEANING_RULES)}


def sample_frame(sample: list[SampledRecord], tokens: TokenFigures, totals: Totals) -> pd.DataFrame:
    """The sample in its order (the reservoir's: its first n rows are a uniform sample of n). Texts: the raw
    fields (a field that cleans past its max length: only its start) and the cleaned ones; lengths of the whole
    raw fields; tokens for the token sample (the first analysis.token_sample_size rows); the quality issues of
    the report (a record has one where its title or content has it); how many records of the file hold the
    same raw title and description, and the same raw title; and the filter that drops the record (none: kept)."""
    import pandas as pd  # here: about 0.4 s, only when the sample is written

    measures = [record.measures for record in sample]
    rules = [m.title_rules | m.content_rules for m in measures]
    issues = [m.title_issues | m.content_issues for m in measures]
    untokenized = [None] * (len(sample) - tokens.sample_size)
    columns = {
        "line": [record.line for record in sample], "uid": [record.uid for record in sample],
        **{name: [getattr(record, name) for record in sample] for name in FIELDS},
        **{f"clean_{name}": [getattr(record, f"clean_{name}") for record in sample] for name in FIELDS},
        **{f"{name}_{unit}": [getattr(m, f"{name}_{unit}") for m in measures]
           for name in FIELDS for unit in ("chars", "words")},
        **{f"{name}_tokens": pd.array(tokens.per_record.get(name, [None] * tokens.sample_size) + untokenized,
                                      dtype="Int64") for name in (*FIELDS, "question_answer")},
        **{f"empty_{name}": [getattr(m, f"{name}_chars") == 0 for m in measures] for name in FIELDS},
        **{issue: [bool(mask >> _RULE_BITS[rule] & 1) for mask in rules] for issue, rule in RULE_ISSUES.items()},
        **{issue: [bool(mask >> bit & 1) for mask in issues] for bit, issue in enumerate(TEXT_ISSUES)},
        "pair_copies": pd.array(totals.copies("pairs", [m.pair_key for m in measures]), dtype="Int64"),
        "title_copies": pd.array(totals.copies("titles", [m.title_key for m in measures]), dtype="Int64"),
        "drop_reason": [record.drop_reason for record in sample],
    }
    return pd.DataFrame(columns)
