"""Loader for Anthropic's HH-RLHF format (`.jsonl` or `.jsonl.gz`).

Each line is {"chosen": transcript, "rejected": transcript}; a transcript is a run of turns
"\\n\\nHuman: ..." / "\\n\\nAssistant: ...". The two transcripts share every turn but the last
Assistant one, so a pair is:
    prompt   = the shared transcript up to and including the last "\\n\\nAssistant:"
    chosen   = the text after that marker in `chosen` (leading space kept, as in the data)
    rejected = the text after that marker in `rejected`

Quirks found in real files get their own skip reason (besides the line-level ones in common.py):
    no_assistant_turn      a transcript has no "\\n\\nAssistant:" marker
    diverging_transcripts  the two transcripts differ before their last Assistant turn
    ends_with_human_turn   the final Assistant turn is followed by a Human turn, so it is not a response
    empty_response         a final Assistant turn is empty or whitespace
    identical_pair         chosen and rejected are the same transcript
    missing_field / non_string_field / invalid_json / invalid_utf8 / not_an_object / blank_line
The file is streamed line by line (the train split is ~160k lines); ids are "<file stem>:<line>".
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from frft_ray.data.common import (
    BadRecordPolicy,
    OnBadRecord,
    RecordRejected,
    check_file,
    iter_json_lines,
    record_stem,
    text_field,
)
from frft_ray.data.records import LoadReport, PreferencePair

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"
SOURCE = "hh-rlhf"


def split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(chosen transcript, rejected transcript) -> (prompt, chosen response, rejected response).

    Raises RecordRejected with the quirk's reason when the pair cannot be split cleanly.
    """
    ic, ir = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if ic < 0 or ir < 0:
        which = "chosen" if ic < 0 else "rejected"
        raise RecordRejected("no_assistant_turn", f"{which} has no {ASSISTANT!r} turn")
    prompt = chosen[: ic + len(ASSISTANT)]
    if rejected[: ir + len(ASSISTANT)] != prompt:
        raise RecordRejected(
            "diverging_transcripts", "chosen and rejected differ before the last Assistant turn"
        )
    resp_c, resp_r = chosen[len(prompt) :], rejected[len(prompt) :]
    if HUMAN in resp_c or HUMAN in resp_r:
        raise RecordRejected("ends_with_human_turn", "a Human turn follows the last Assistant turn")
    if not resp_c.strip() or not resp_r.strip():
        raise RecordRejected("empty_response", f"{'chosen' if not resp_c.strip() else 'rejected'} response is empty")
    if resp_c == resp_r:
        raise RecordRejected("identical_pair", "chosen and rejected are the same transcript")
    return prompt, resp_c, resp_r


def iter_hh_rlhf(
    path: str | Path,
    on_bad_record: OnBadRecord = "error",
    report: LoadReport | None = None,
    progress: bool = False,
) -> Iterator[PreferencePair]:
    """Stream PreferencePairs from an HH-RLHF file; kept and skipped counts accumulate in `report`."""
    p = check_file(path)
    policy = BadRecordPolicy(path, on_bad_record, report if report is not None else LoadReport(str(path)))
    stem = record_stem(p)
    for lineno, obj in iter_json_lines(p, policy, progress):
        try:
            prompt, chosen, rejected = split_transcripts(text_field(obj, "chosen"), text_field(obj, "rejected"))
        except RecordRejected as err:
            policy.reject(str(lineno), err)
            continue
        policy.report.records += 1
        yield PreferencePair(id=f"{stem}:{lineno}", prompt=prompt, chosen=chosen, rejected=rejected, source=SOURCE)


def load_hh_rlhf(
    path: str | Path, on_bad_record: OnBadRecord = "error", max_records: int | None = None, progress: bool = False
) -> tuple[list[PreferencePair], LoadReport]:
    """The whole file (or its first `max_records` good pairs) as a list, with the LoadReport."""
    report = LoadReport(str(path))
    pairs = list(islice(iter_hh_rlhf(path, on_bad_record, report, progress), max_records))
    return pairs, report
