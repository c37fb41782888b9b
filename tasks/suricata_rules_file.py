"""The rules file Suricata loads (`# ` comment lines, then one rule per line by sid), and
the check it passes before it replaces the one in use."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.arrow_text import joined_lines, true_where
from tasks.suricata_rules import MAX_RULE_BYTES


def rules_file(lines: pd.DataFrame, header: str) -> bytes:
    """The rules file: `header` as `# ` comment lines, then one rule per line by sid."""
    prefix, rules = _file_parts(lines, header)
    return joined_lines(rules, prefix)


def checked_rules_file(lines: pd.DataFrame, header: str) -> tuple[bytes, list[str]]:
    """`rules_file` and what `check_rules_file` finds in it, found on the lines the file is
    joined from (while a second thread joins them) instead of on the file split again, a
    copy of hundreds of MB. The same lines: the header is comment lines, which the check
    passes over, and each rule is joined with one newline (a rule holding a newline would
    be reported as holding a control character)."""
    prefix, rules = _file_parts(lines, header)
    with ThreadPoolExecutor(max_workers=1) as pool:
        content = pool.submit(joined_lines, rules, prefix)
        problems = _line_problems(rules, prefix.count(b"\n"), valid_utf8=True)
    return content.result(), problems


def _file_parts(lines: pd.DataFrame, header: str) -> tuple[bytes, pa.ChunkedArray]:
    """The comment lines the file starts with, and its rule lines (without newlines)."""
    comments = ["".join(char for char in line if char.isprintable()).rstrip()
                for line in header.splitlines()]
    prefix = "".join((line if line.startswith("#") else f"# {line}") + "\n" for line in comments)
    sids = lines["sid"].to_numpy(dtype=np.int64, na_value=-1)
    rules = pa.chunked_array(pd.array(lines["rule"], dtype="string").__arrow_array__())
    if len(sids) > 1 and (np.diff(sids) < 0).any():  # a built ruleset comes in sid order
        rules = rules.take(pa.array(np.argsort(sids, kind="stable")))
    return prefix.encode(), rules


_ACTIONS = "alert|drop|pass|reject|rejectsrc|rejectdst|rejectboth"
_ADDRESS_OR_PORT = r"(?:\[[^()]*?\]|[^\s()\[\]]+)"
_QUOTED = r'"(?:[^"\\;]|\\.)*"'  # Suricata splits options at every unescaped ';'
_OPTION = r' *[A-Za-z0-9_.-]+(?: *:(?:[^";\\]|\\.|' + _QUOTED + r')*)? *;'
_RULE_GRAMMAR = (rf"^(?:{_ACTIONS}) +[A-Za-z0-9_.-]+ +{_ADDRESS_OR_PORT} +{_ADDRESS_OR_PORT} +"
                 rf"(?:->|<>|=>) +{_ADDRESS_OR_PORT} +{_ADDRESS_OR_PORT} +\((?:{_OPTION})+ *\)$")
# (RE2, problem, problem when it matches); run only when a line holds a byte a rules file
# may not (anything but printable ASCII, UTF-8 sequences, tab and newline), to say which
_BYTE_CHECKS: tuple[tuple[str, str, bool], ...] = (
    (r"[\x00-\x08\x0a-\x1f\x7f]", "contains a control character", True),
    (r"\x{FFFD}", "is not valid UTF-8", True),
)
_LINE_CHECKS: tuple[tuple[str, str, bool], ...] = (
    (r"^\s", "starts with whitespace, which makes Suricata skip it", True),
    (r"\\$", "ends with '\\', which would join it to the next line", True),
    (_RULE_GRAMMAR, "is not a rule: expected '<action> <proto> <src> <port> -> <dst> <port> "
                    "(<option>; ...)' with quotes closed and no unescaped ';' inside them", False),
    # literal-first patterns: RE2 then skips ahead with memchr, several times faster
    (r'msg *: *"', "has no msg", False),
    (r"rev *: *[0-9]+ *;", "has no rev", False),
)
_SID = r"sid *: *(?P<sid>[0-9]{1,18}) *;"
# The renderer's shape, printable ASCII without backslashes: action, single-spaced header,
# msg first, `sid:N; rev:N;` as written. Every line it matches is a sub-case of
# _RULE_GRAMMAR and passes each _LINE_CHECKS and _BYTE_CHECKS entry (see check_rules_file).
_UNQUOTED = r'[ !#-:<-\[\]-~]'  # printable ASCII but '"', ';' and '\\'
_TOKEN = r"[!#-'*-:<-Z^-~]+"  # printable ASCII but space, quotes, (, ), [, ], ; and \\
_STRICT_OPTION = rf' ?[A-Za-z0-9_.-]+(?::(?:{_UNQUOTED}|"{_UNQUOTED}*")*)?;'
_STRICT_RULE = (rf'^(?:{_ACTIONS}) [A-Za-z0-9_.-]+ {_TOKEN} {_TOKEN} (?:->|<>|=>) {_TOKEN} '
                rf'{_TOKEN} \(msg:"{_UNQUOTED}*";(?:{_STRICT_OPTION})* sid:[0-9]{{1,18}}; '
                rf'rev:[0-9]+;(?:{_STRICT_OPTION})*\)$')
MAX_CHECK_PROBLEMS = 100


def check_rules_file(content: bytes) -> list[str]:
    """Structural problems of a rules file, [] when it looks loadable: run before the file
    replaces the one Suricata uses. Cheap and whole-file (RE2 over every line at once); it
    does not know keywords, so it is a guard against broken generation, not `suricata -T`.

    One strict pattern (`_STRICT_RULE`, the shape the renderer writes) clears most lines in
    a single pass; every check below runs on the lines it does not clear. A line it clears
    passes all of them, so the problems found are the same as with every check on every
    line."""
    if content and not content.endswith(b"\n"):
        return ["the last line is not terminated by a newline"]
    lines, valid_utf8 = _file_lines(content)
    return _line_problems(pa.chunked_array([lines]), 0, valid_utf8)


def _line_problems(lines: pa.ChunkedArray, skipped: int, valid_utf8: bool) -> list[str]:
    """The check of `check_rules_file` on a file's lines after its first `skipped` lines
    (comments): blocks of lines are matched against the strict pattern and their sids read
    in two threads (RE2 in arrow runs without the GIL)."""
    blocks = [lines.slice(start, _CHECK_BLOCK_ROWS)
              for start in range(0, len(lines), _CHECK_BLOCK_ROWS)] or [lines]
    with ThreadPoolExecutor(max_workers=2) as pool:
        strict_blocks = pool.map(_strict_mask, blocks)
        sid_blocks = pool.map(_sid_texts, blocks)
        strict = np.concatenate(list(strict_blocks))
        problems, is_rule, found = _checked_lines(lines, np.flatnonzero(~strict), valid_utf8)
        too_long = true_where(pc.greater(pc.binary_length(lines), MAX_RULE_BYTES)) & is_rule
        problems += [(int(row) + 1, f"is longer than {MAX_RULE_BYTES} bytes")
                     for row in np.flatnonzero(too_long)]
        sid_text = pa.chunked_array([chunk for block in sid_blocks for chunk in block.chunks],
                                    lines.type)
    problems = [(number + skipped, why) for number, why in problems]
    problems += _sid_problems(sid_text, np.flatnonzero(is_rule), found, skipped)
    messages = [f"line {number}: {why}" for number, why in sorted(problems)]
    if len(messages) > MAX_CHECK_PROBLEMS:
        more = len(messages) - MAX_CHECK_PROBLEMS
        messages = [*messages[:MAX_CHECK_PROBLEMS], f"... and {more} more problems"]
    return messages


_CHECK_BLOCK_ROWS = 1 << 17


def _strict_mask(lines: pa.ChunkedArray) -> np.ndarray:
    return true_where(pc.match_substring_regex(lines, _STRICT_RULE))


def _checked_lines(lines: pa.Array | pa.ChunkedArray, rows: np.ndarray, valid_utf8: bool,
                   ) -> tuple[list[tuple[int, str]], np.ndarray, np.ndarray]:
    """Every check on the lines at `rows`: (line number, problem) pairs, which lines of the
    file are rules, and which rule lines have a problem already (a missing sid is then
    not reported on top). Lines not in `rows` are rules without problems."""
    is_rule = np.ones(len(lines), dtype=bool)
    found = np.zeros(len(lines), dtype=bool)
    if not len(rows):
        return [], is_rule, found
    checked = _take(lines, rows)
    # comment and blank lines are checked along with the rules and their results ignored
    comment = true_where(pc.match_substring_regex(checked, r"^(?:#|\s*$)"))
    is_rule[rows[comment]] = False
    # a cleared line holds only printable ASCII: the file's bytes are clean when these are
    clean_bytes = valid_utf8 and not true_where(pc.match_substring_regex(
        checked, _BYTE_CHECKS[0][0])).any()
    bad_here = comment.copy()
    problems: list[tuple[int, str]] = []
    for pattern, why, matching_is_bad in (() if clean_bytes else _BYTE_CHECKS) + _LINE_CHECKS:
        matched = true_where(pc.match_substring_regex(checked, pattern))
        bad = (matched if matching_is_bad else ~matched) & ~bad_here
        bad_here |= bad
        problems += [(int(row) + 1, why) for row in rows[bad]]
    found[rows] = bad_here & ~comment
    return problems, is_rule, found


def _take(lines: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """`lines.take(rows)` for ascending `rows`, chunk by chunk: arrow's take on a chunked
    array first joins the chunks, a copy of the whole rules text for a handful of lines."""
    if isinstance(lines, pa.Array):
        return lines.take(pa.array(rows, pa.int64()))
    starts = np.cumsum([0] + [len(chunk) for chunk in lines.chunks])
    edges = np.searchsorted(rows, starts)
    taken = [chunk.take(pa.array(rows[edges[at]:edges[at + 1]] - starts[at], pa.int64()))
             for at, chunk in enumerate(lines.chunks)]
    return pa.concat_arrays(taken) if taken else pa.array([], lines.type)


def _sid_texts(lines: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return pc.struct_field(pc.extract_regex(lines, _SID), "sid")


def _file_lines(content: bytes) -> tuple[pa.Array, bool]:
    """The file's lines (without newlines) as an arrow string array, and whether the file
    is valid UTF-8; where it is not, U+FFFD stands in and a line check reports it."""
    valid_utf8 = True
    try:
        whole = pa.LargeBinaryArray.from_buffers(  # the bytes themselves, not a copy
            pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, len(content)], np.int64)),
                                   pa.py_buffer(content)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        valid_utf8 = False
        whole = pa.array([content.decode("utf-8", errors="replace")], pa.large_string())
    lines = pc.list_flatten(pc.split_pattern(whole, "\n"))
    return lines.slice(0, max(len(lines) - 1, 0)), valid_utf8  # nothing after the last \n


def _distinct(sids: np.ndarray) -> bool:
    """Whether no sid repeats. A built ruleset's rules come in sid order, and increasing
    sids are distinct: checked in one pass, without a hash table of millions of sids."""
    return bool((np.diff(sids) > 0).all()) or len(np.unique(sids)) == len(sids)


def _sid_problems(sid_text: pa.Array | pa.ChunkedArray, rule_rows: np.ndarray,
                  already_bad: np.ndarray, skipped: int = 0) -> list[tuple[int, str]]:
    """Rule lines (at `rule_rows`; `sid_text` per line) without a sid, or sharing one;
    numbered after `skipped` lines."""
    rule_sids = pc.cast(sid_text, pa.int64()).take(pa.array(rule_rows, pa.int64()))
    if not rule_sids.null_count and _distinct(rule_sids.to_numpy()):
        return []  # the usual case, without a pandas pass over millions of sids
    numbers = rule_rows + 1 + skipped
    sids = pd.Series(rule_sids.to_numpy(zero_copy_only=False),
                     dtype="Int64") if len(rule_rows) else pd.Series([], dtype="Int64")
    missing = sids.isna().to_numpy() & ~already_bad[rule_rows]
    problems = [(int(number), "has no sid") for number in numbers[missing]]
    repeated = np.flatnonzero((sids.notna() & sids.duplicated(keep=False)).to_numpy())
    for sid, rows in pd.Series(repeated).groupby(sids.to_numpy()[repeated]).agg(list).items():
        where = ", ".join(str(numbers[row]) for row in rows)
        problems.append((int(numbers[rows[0]]), f"sid {sid} is on more than one line: {where}"))
    return problems
