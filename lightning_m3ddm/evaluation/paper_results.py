"""The paper's published numbers (Tables 1-3), kept beside the measured ones.

Data: ``paper_results.json`` next to this module, values as printed (strings).
:func:`paper_rows` returns the rows that match an evaluation protocol, with the
table's own columns mapped onto our metric keys (``"mse"``, ..., ``"fvd"``);
e.g. Table 3's ``"opc"`` column is the ``"fvd"`` of protocol ``ssv2_opc``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PAPER_RESULTS_FILE = Path(__file__).with_name("paper_results.json")


@dataclass(frozen=True)
class PaperRow:
    """One method's published numbers for one protocol.

    Attributes:
        table: e.g. ``"Table 1"``; ``table_id``: the JSON block, e.g. ``"table1_davis"``.
        method: as printed, e.g. ``"Ours"``, ``"Dehan [6]"``.
        printed: metric key -> value as printed (``"0.0260"``).
        notes: the table's caveats (how the row relates to the protocol).
    """

    table: str
    table_id: str
    dataset: str
    method: str
    printed: dict[str, str]
    notes: str

    @property
    def values(self) -> dict[str, float]:
        return {key: float(text) for key, text in self.printed.items()}


@lru_cache(maxsize=1)
def load_paper_results(path: str | None = None) -> dict:
    """The parsed JSON file (cached)."""
    with open(path or PAPER_RESULTS_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def paper_rows(protocol: str, data: dict | None = None) -> list[PaperRow]:
    """Published rows for ``protocol`` (empty when the paper has none)."""
    data = data if data is not None else load_paper_results()
    rows: list[PaperRow] = []
    for table in data["tables"]:
        if protocol not in table["protocols"]:
            continue
        mapping = table.get("protocol_columns", {}).get(protocol)
        for row in table["rows"]:
            if mapping is None:
                printed = {key: row["values"][key] for key in table["columns"]}
            else:
                printed = {key: row["values"][column] for key, column in mapping.items()}
            rows.append(PaperRow(table["table"], table["id"], table["dataset"], row["method"], printed, table.get("notes", "")))
    return rows
