"""The example plugin's own tests: the function alone, then through a running bridge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from invoice_totals import InvoiceParams, invoice_totals

from bridge import Context, Item
from bridge.app import create_app
from bridge.auth import mint_token
from bridge.processors.registry import Registry
from bridge.settings import Settings

INVOICE = {
    "number": "2026-0042",
    "lines": [
        {"qty": 3, "unit_price": "0.10", "vat_rate": 19},
        {"qty": 1, "unit_price": "19.99", "vat_rate": 7},
    ],
}


def context(tmp_path: Path) -> Context:
    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32)
    return Context(job_id="j", trace_id="t", processor="invoice_totals", settings=settings)


def test_totals_are_exact(tmp_path: Path) -> None:
    (out,) = invoice_totals(Item(INVOICE), InvoiceParams(), context(tmp_path))
    # 0.30 net (a float sum would give 0.30000000000000004), VAT 0.06 + 1.40
    assert (out["net_total"], out["vat_total"], out["gross_total"]) == ("20.29", "1.46", "21.75")
    assert out["number"] == "2026-0042"


def test_one_item_per_line(tmp_path: Path) -> None:
    rows = invoice_totals(Item(INVOICE), InvoiceParams(per_line=True), context(tmp_path))
    assert [(r["line"], r["net"], r["vat"]) for r in rows] == [
        (1, "0.30", "0.06"),
        (2, "19.99", "1.40"),
    ]


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    bad = {"lines": [{"qty": 1, "unit_price": "abc", "vat_rate": 19}]}
    with pytest.raises(ValueError, match="line 1: 'unit_price' is not a number"):
        invoice_totals(Item(bad), InvoiceParams(), context(tmp_path))


async def test_through_the_bridge(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32, access_log=False)
    registry = Registry.load(["invoice_totals"], use_entry_points=False)
    client = await aiohttp_client(create_app(settings, registry))
    headers = {"Authorization": f"Bearer {mint_token(settings, ['execute', 'status'], 60)}"}

    listed = await (await client.get("/api/v1/processors", headers=headers)).json()
    (info,) = [p for p in listed["processors"] if p["name"] == "invoice_totals"]
    assert info["parameters"]["properties"]["rounding"]["enum"] == ["per_line", "per_invoice"]

    body = {
        "processing_type": "invoice_totals",
        "items": [{"json": INVOICE}, {"json": {"number": "broken"}}, {"json": INVOICE}],
        "parameters": {"per_line": True},
    }
    answer = await (
        await client.post("/api/v1/workflow/execute", json=body, headers=headers)
    ).json()
    assert [i["pairedItem"]["item"] for i in answer["items"]] == [0, 0, 2, 2]
    assert answer["errors"] == [
        {
            "index": 1,
            "code": "processor_error",
            "message": "ValueError: an invoice needs a non-empty `lines` list",
        }
    ]
