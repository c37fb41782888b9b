"""Local rule customizations that survive every update: the file an analyst edits.

The generated rules are rewritten on each update, so hand edits to them would be lost.
Instead, as with suricata-update's disable.conf / modify.conf / threshold.conf, the changes
live in one file (`MISP_NDR_RULES__CUSTOMIZATIONS_FILE`, default
`rule-customizations.conf`) and are applied again to every new ruleset. `--fast` updates
drop them, after backing the file up (`backup_customizations`).

Format: one customization per line; `#` starts a comment (outside quotes); blank lines are
ignored. A target is a rule's sid or a MISP attribute UUID (all rules of that attribute:
a domain has a DNS, a TLS and an HTTP rule)::

    disable 1000123                        # kept in the file, commented out
    disable 5f0c2c9e-0b7a-4d8e-9c1f-2a3b4c5d6e7f
    drop 1000123                           # action alert -> drop (IPS mode)
    threshold 1000123 type limit, track by_src, count 1, seconds 3600
    modify 1000123 "<python regex>" "<replacement>"

`threshold` takes Suricata's four settings, in any order: type limit|threshold|both,
track by_src|by_dst|by_rule|by_both, count N, seconds N. `modify` applies a Python regular
expression to the rule text; in the replacement `\\1` or `\\g<name>` insert groups. Inside
the quotes write `\\"` for a quote; every other backslash is kept as written.

Order on each rule: modify, threshold, drop, disable (whatever the order in the file), so a
disabled rule shows the other changes when enabled again. A customization whose target is
not in the ruleset (or a modify whose regex matches nothing) is counted as unmatched, not an
error: the attribute may come back. A change that would leave an unsound rule (unbalanced
quotes or parentheses, a line break, the sid gone or changed) is not applied, and is counted
as rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from misp_ndr.errors import ConfigError
from misp_ndr.task_policy import batch_task

TARGET = r"(?P<target>\d{1,18}|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})"
QUOTED = r'"(?P<{name}>(?:[^"\\]|\\.)*)"'
FORMS = {
    "disable": "disable <sid|attribute uuid>",
    "drop": "drop <sid|attribute uuid>",
    "threshold": "threshold <sid|attribute uuid> type limit|threshold|both, "
                 "track by_src|by_dst|by_rule|by_both, count <n>, seconds <n>",
    "modify": 'modify <sid|attribute uuid> "<python regex>" "<replacement>"',
}
LINE_PATTERNS = {
    "disable": re.compile(rf"disable\s+{TARGET}\s*(?:#.*)?"),
    "drop": re.compile(rf"drop\s+{TARGET}\s*(?:#.*)?"),
    "threshold": re.compile(rf"threshold\s+{TARGET}\s+(?P<settings>[^#]+?)\s*(?:#.*)?"),
    "modify": re.compile(rf"modify\s+{TARGET}\s+{QUOTED.format(name='pattern')}\s+"
                         rf"{QUOTED.format(name='replacement')}\s*(?:#.*)?"),
}
THRESHOLD_VALUES = {
    "type": re.compile(r"limit|threshold|both"),
    "track": re.compile(r"by_src|by_dst|by_rule|by_both"),
    "count": re.compile(r"[1-9]\d{0,8}"),
    "seconds": re.compile(r"[1-9]\d{0,8}"),
}
APPLY_ORDER = ("modify", "threshold", "drop", "disable")
RULE_ACTIONS = {"alert", "drop", "pass", "reject", "rejectsrc", "rejectdst", "rejectboth"}
OPTION_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
# A rule is one line of the rules file: a break inside it would start a line of its own.
LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]|\\$")


@dataclass(frozen=True)
class Customization:
    action: str  # disable | drop | threshold | modify
    target: str  # a sid ("1000123") or an attribute UUID, lowercase
    where: str  # "rule-customizations.conf line 4": how the report names it
    threshold: str = ""  # normalized: "type limit, track by_src, count 1, seconds 3600"
    pattern: re.Pattern[str] | None = None
    replacement: str = ""

    @property
    def label(self) -> str:
        return f"{self.action} {self.target} ({self.where})"


@dataclass(frozen=True)
class Customizations:
    entries: tuple[Customization, ...] = ()


def parse_customizations(text: str, origin: str) -> Customizations:
    """Every line or nothing: a typo must stop the update, not silently re-enable a rule
    the analyst disabled."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            entries.append(_parse_line(line, f"{origin} line {number}"))
    return Customizations(tuple(entries))


def load_customizations(path: Path) -> Customizations:
    """A missing file means no customizations."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Customizations()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the rule customizations {path} "
                          f"(MISP_NDR_RULES__CUSTOMIZATIONS_FILE): {exc}") from exc
    return parse_customizations(text, path.name)


def backup_customizations(path: Path) -> Path | None:
    """Move the file aside as `<name>.<UTC time>.bak` (fast mode runs without
    customizations, but an analyst's work is never deleted). None if there was no file."""
    if not path.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    path.replace(backup)  # one rename: never both files, never neither
    return backup


def _parse_line(line: str, where: str) -> Customization:
    action = line.split(maxsplit=1)[0].lower()
    if action not in LINE_PATTERNS:
        raise _syntax_error(where, f"unknown customization {action!r}", list(FORMS.values()))
    match = LINE_PATTERNS[action].fullmatch(line)
    if match is None:
        raise _syntax_error(where, f"cannot read {action!r}", [FORMS[action]])
    target = match["target"].lower()
    if action == "threshold":
        return Customization(action, target, where, threshold=_threshold(match["settings"],
                                                                         where))
    if action == "modify":
        pattern, replacement = _modify(match["pattern"], match["replacement"], where)
        return Customization(action, target, where, pattern=pattern, replacement=replacement)
    return Customization(action, target, where)


def _threshold(settings: str, where: str) -> str:
    """Validated word by word: the text goes into the rule, so nothing else may."""
    values: dict[str, str] = {}
    for part in settings.split(","):
        words = part.split()
        if len(words) != 2 or words[0] not in THRESHOLD_VALUES or words[0] in values \
                or not THRESHOLD_VALUES[words[0]].fullmatch(words[1]):
            raise _syntax_error(where, f"bad threshold setting {part.strip()!r}",
                                [FORMS["threshold"]])
        values[words[0]] = words[1]
    if len(values) != len(THRESHOLD_VALUES):
        missing = ", ".join(name for name in THRESHOLD_VALUES if name not in values)
        raise _syntax_error(where, f"threshold needs {missing}", [FORMS["threshold"]])
    return ", ".join(f"{name} {values[name]}" for name in THRESHOLD_VALUES)


def _modify(pattern_text: str, replacement_text: str, where: str) -> tuple[re.Pattern[str], str]:
    replacement = _unquote(replacement_text)
    try:
        pattern = re.compile(_unquote(pattern_text))
        pattern.sub(replacement, "")  # checks group references before any rule is touched
    except re.error as exc:
        raise _syntax_error(where, f"bad regular expression or replacement: {exc}",
                            [FORMS["modify"]]) from None
    return pattern, replacement


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: m[1] if m[1] == '"' else m[0], text)


def _syntax_error(where: str, problem: str, forms: list[str]) -> ConfigError:
    expected = "\n  ".join(forms)
    return ConfigError(f"{where}: {problem}; expected:\n  {expected}")


def rule_options(rule: str) -> list[tuple[str, int, int]] | str:
    """(name, start, end) of each option of a Suricata rule, or why the rule is unsound.
    A cheap structural check, not a parser: quotes and escapes honoured, one option list
    closed by the final parenthesis, every option ended by `;`."""
    opening = rule.find("(")
    header = rule[:max(opening, 0)].split()
    if opening < 0 or not header or header[0] not in RULE_ACTIONS or '"' in rule[:opening]:
        return "no rule header: expected '<action> <proto> <src> <port> -> ... (' first"
    options: list[tuple[str, int, int]] = []
    start, in_quotes, escaped = opening + 1, False, False
    for position in range(opening + 1, len(rule)):
        char = rule[position]
        if escaped or char == "\\":
            escaped = not escaped
        elif char == '"':
            in_quotes = not in_quotes
        elif in_quotes:
            continue
        elif char == ";":
            name = rule[start:position].split(":", 1)[0].strip()
            if not OPTION_NAME.fullmatch(name):
                return f"unreadable option {rule[start:position].strip()[:40]!r}"
            options.append((name, start, position + 1))
            start = position + 1
        elif char == "(":
            return "unbalanced parentheses"
        elif char == ")":
            if rule[start:position].strip() or rule[position + 1:].strip():
                return "text after the last ';' or after the closing parenthesis"
            return options
    return "unbalanced quotes" if in_quotes else "unbalanced parentheses"


def rule_problem(rule: str, sid: int) -> str | None:
    """Why a customized rule must not be used, or None."""
    if LINE_BREAKING.search(rule):
        return "a line break, control character or trailing backslash would split the rule"
    options = rule_options(rule)
    if isinstance(options, str):
        return options
    sids = [rule[start:end] for name, start, end in options if name == "sid"]
    if len(sids) != 1 or sids[0].split(":", 1)[-1].strip(" ;") != str(sid):
        return f"the rule must keep exactly one sid:{sid}"
    return None


@dataclass
class _Outcome:
    touched: int = 0
    rejected: int = 0


def apply_customizations(
    lines: pd.DataFrame, customizations: Customizations
) -> tuple[pd.DataFrame, dict[str, int]]:
    """`lines` with each rule's text customized. Counts: rules touched per customization
    (by its label), `unmatched` customizations, and `rejected` changes (with a
    `<label> rejected` entry naming the customization).

    Only the targeted rules become Python strings; the others stay in their arrow column
    (a ruleset has millions of rules, a customization file a handful of lines)."""
    targets = _target_positions(lines, {entry.target for entry in customizations.entries})
    texts = _TargetedTexts(lines)
    disabled: set[int] = set()
    counts: dict[str, int] = {"unmatched": 0, "rejected": 0}
    ordered = sorted(customizations.entries, key=lambda entry: APPLY_ORDER.index(entry.action))
    for entry in ordered:
        positions = targets(entry.target)
        if entry.action == "disable":
            outcome = _Outcome(touched=len(positions))
            disabled.update(positions.tolist())
        else:
            outcome = _apply_text_change(texts, positions, _TEXT_CHANGES[entry.action], entry)
        counts[entry.label] = outcome.touched
        counts["unmatched"] += int(outcome.touched == 0 and outcome.rejected == 0)
        counts["rejected"] += outcome.rejected
        if outcome.rejected:
            counts[f"{entry.label} rejected"] = outcome.rejected
    for position in disabled:
        texts.set(position, "# " + texts.get(position))
    return lines.assign(rule=texts.column()), counts


class _TargetedTexts:
    """The rule column, with the few customized rules held as Python strings."""

    def __init__(self, lines: pd.DataFrame) -> None:
        self.rules = pa.chunked_array(pd.array(lines["rule"], dtype="string").__arrow_array__())
        self.sids = lines["sid"]
        self.changed: dict[int, str] = {}

    def get(self, position: int) -> str:
        if position in self.changed:
            return self.changed[position]
        return self.rules[position].as_py()

    def set(self, position: int, text: str) -> None:
        self.changed[position] = text

    def sid(self, position: int) -> object:
        return self.sids.iat[position]

    def column(self) -> pd.arrays.ArrowStringArray:
        """The column with the changed rules put in: slices of the untouched rules around
        them, so the whole column (hundreds of MB) is never copied."""
        pieces, start = [], 0
        for position in sorted(self.changed):
            pieces += [self.rules.slice(start, position - start),
                       pa.chunked_array([[self.changed[position]]], self.rules.type)]
            start = position + 1
        pieces.append(self.rules.slice(start))
        chunks = [chunk for piece in pieces for chunk in piece.chunks if len(chunk)]
        return pd.arrays.ArrowStringArray(pa.chunked_array(chunks, self.rules.type))


def _target_positions(lines: pd.DataFrame, targets: set[str]) -> Callable[[str], np.ndarray]:
    """Row positions of a sid or of an attribute's rules; only the targets named are
    looked up, in one vectorized pass per column."""
    found: dict[str, np.ndarray] = {}
    sids = {int(target) for target in targets if target.isdigit()}
    if sids:
        column = lines["sid"].astype("Int64").to_numpy(dtype=np.int64, na_value=-1)
        rows = np.flatnonzero(np.isin(column, list(sids)))
        found |= {str(sid): group for sid, group in _grouped(column[rows], rows)}
    uuids = sorted(target for target in targets if not target.isdigit())
    if uuids:
        column = pc.utf8_lower(pa.chunked_array(pd.array(
            lines["attribute_uuid"], dtype="string").__arrow_array__()))
        rows = np.flatnonzero(pc.fill_null(pc.is_in(column, pa.array(uuids, column.type)),
                                           False).to_numpy(zero_copy_only=False))
        found |= dict(_grouped(column.take(pa.array(rows)).to_numpy(zero_copy_only=False),
                               rows))
    nothing = np.array([], dtype=np.intp)

    def positions(target: str) -> np.ndarray:
        key = str(int(target)) if target.isdigit() else target
        return found.get(key, nothing)

    return positions


def _grouped(keys: np.ndarray, rows: np.ndarray) -> list[tuple[object, np.ndarray]]:
    """(key, its rows in ascending order) for each distinct key."""
    return [(key, rows[keys == key]) for key in pd.unique(keys)]


def _apply_text_change(
    texts: _TargetedTexts, positions: np.ndarray,
    change: Callable[[str, Customization], str], entry: Customization,
) -> _Outcome:
    """Loops over the targeted rules only: a customization names a handful of rules."""
    outcome = _Outcome()
    for position in positions.tolist():
        current = texts.get(position)
        changed = change(current, entry)
        if changed == current:  # a regex that did not match, a rule already `drop`
            continue
        if rule_problem(changed, texts.sid(position)) is not None:
            outcome.rejected += 1
            continue
        texts.set(position, changed)
        outcome.touched += 1
    return outcome


def _modified(rule: str, entry: Customization) -> str:
    assert entry.pattern is not None
    return entry.pattern.sub(entry.replacement, rule)


def _thresholded(rule: str, entry: Customization) -> str:
    """A `threshold:` option just before `sid:`, replacing any threshold already there."""
    options = rule_options(rule)
    if isinstance(options, str):
        return rule  # an unsound rule is reported by the check, never edited blind
    parts, cursor = [], 0
    for name, start, end in options:
        if name == "threshold":
            parts.append(rule[cursor:start])
            cursor = end
        elif name == "sid":
            parts.append(rule[cursor:start] + f" threshold: {entry.threshold};")
            cursor = start
    return "".join(parts) + rule[cursor:]


def _dropped(rule: str, entry: Customization) -> str:
    return re.sub(r"^alert(?=\s)", "drop", rule)


_TEXT_CHANGES: dict[str, Callable[[str, Customization], str]] = {
    "modify": _modified, "threshold": _thresholded, "drop": _dropped,
}


def drop_customizations(path: Path) -> None:
    """Fast mode runs without customizations: the file is backed up, then out of the way."""
    backup_customizations(path)


load_customizations_task = batch_task(load_customizations, "load-rule-customizations")
drop_customizations_task = batch_task(drop_customizations, "drop-rule-customizations")
