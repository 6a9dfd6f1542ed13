"""An example n8n-bridge plugin: invoice totals with exact decimal arithmetic.

Each item is an invoice, `{"number": "...", "lines": [{"qty": 2, "unit_price": "9.90",
"vat_rate": 19}, ...]}`. The processor adds net, VAT and gross totals — something n8n's Code node
gets wrong with floating point — or, with `per_line: true`, emits one item per line (one input,
many outputs). An invoice with a bad line fails on its own; the others go on.

Load it with BRIDGE_PROCESSORS=invoice_totals (on PYTHONPATH), or install this folder
(`pip install ./examples/invoice_totals`): its pyproject declares the `n8n_bridge.processors`
entry point.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, Field

from bridge import Context, Item, processor

CENT = Decimal("0.01")


class InvoiceParams(BaseModel):
    currency: str = Field("EUR", min_length=3, max_length=3, description="ISO 4217 code")
    rounding: Literal["per_line", "per_invoice"] = Field(
        "per_line", description="round VAT for each line, or once for the invoice"
    )
    per_line: bool = Field(False, description="emit one item per invoice line instead")


def _decimal(line: dict[str, Any], field: str, number: int) -> Decimal:
    try:
        return Decimal(str(line[field]))
    except KeyError:
        raise ValueError(f"line {number}: missing {field!r}") from None
    except InvalidOperation:
        raise ValueError(f"line {number}: {field!r} is not a number: {line[field]!r}") from None


@processor("invoice_totals", params=InvoiceParams, timeout_s=30)
def invoice_totals(item: Item, params: InvoiceParams, ctx: Context) -> list[dict[str, Any]]:
    """Adds net, VAT and gross totals to invoices, in exact decimal arithmetic."""
    lines = item.json.get("lines")
    if not isinstance(lines, list) or not lines:
        raise ValueError("an invoice needs a non-empty `lines` list")
    rows: list[tuple[int, Decimal, Decimal]] = []  # line number, net, VAT
    for number, line in enumerate(lines, start=1):
        net = _decimal(line, "qty", number) * _decimal(line, "unit_price", number)
        vat = net * _decimal(line, "vat_rate", number) / 100
        if params.rounding == "per_line":
            vat = vat.quantize(CENT, ROUND_HALF_UP)
        rows.append((number, net.quantize(CENT, ROUND_HALF_UP), vat))
    ctx.log.info("invoice %s: %d lines", item.json.get("number"), len(rows))
    if params.per_line:
        return [
            {
                "number": item.json.get("number"),
                "line": number,
                "net": str(net),
                "vat": str(vat.quantize(CENT, ROUND_HALF_UP)),
                "currency": params.currency,
            }
            for number, net, vat in rows
        ]
    net_total = sum((net for _, net, _ in rows), Decimal(0))
    vat_total = sum((vat for _, _, vat in rows), Decimal(0)).quantize(CENT, ROUND_HALF_UP)
    return [
        {
            **item.json,
            "net_total": str(net_total),
            "vat_total": str(vat_total),
            "gross_total": str(net_total + vat_total),
            "currency": params.currency,
        }
    ]
