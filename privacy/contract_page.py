"""The data contract's results as one self-contained HTML page (``audit/validation.html``).

No script, no external style or font: the page reads the same offline, printed,
or under a strict Content-Security-Policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2

if TYPE_CHECKING:
    from privacy.data_contract import ContractResult

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>egoveil data contract: {{ 'passed' if result.success else 'FAILED' }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0} h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
.ok{color:#116329} .bad{color:#a40e26} .muted{color:#57606a}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;font-weight:600}
.badge.ok{background:#dafbe1} .badge.bad{background:#ffebe9}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#f6f8fa} code{font-size:12px}
details>summary{cursor:pointer}
</style></head><body>
<h1>Data contract <span class="badge {{ 'ok' if result.success else 'bad' }}">
{{ 'passed' if result.success else 'FAILED' }}</span></h1>
<p class="muted">{{ result.evaluated }} expectations on {{ result.batches|length }} tables,
{{ result.failed }} failed. Validated {{ result.validated_at }} with great_expectations
{{ result.gx_version }} (in process, ephemeral context). Results hold counts and column
names, never values.</p>
<table><thead><tr><th>file</th><th>suite</th><th>result</th><th>expectations</th></tr></thead>
<tbody>{% for b in result.batches %}<tr>
<td><a href="#b{{ loop.index }}">{{ b.name }}</a></td><td>{{ b.suite }}</td>
<td class="{{ 'ok' if b.success else 'bad' }}">{{ 'passed' if b.success else 'failed' }}</td>
<td>{{ b.expectations|length - b.failed|length }} / {{ b.expectations|length }}</td>
</tr>{% endfor %}</tbody></table>
{% for b in result.batches %}
<h2 id="b{{ loop.index }}">{{ b.name }} <span class="muted">· {{ b.suite }}</span>
<span class="badge {{ 'ok' if b.success else 'bad' }}">{{ 'passed' if b.success else 'failed' }}</span></h2>
<details {{ '' if b.success else 'open' }}><summary>{{ b.expectations|length }} expectations</summary>
<table><thead><tr><th></th><th>expectation</th><th>column</th><th>parameters</th><th>observed</th></tr></thead>
<tbody>{% for e in b.expectations %}<tr>
<td class="{{ 'ok' if e.success else 'bad' }}">{{ '✓' if e.success else '✗' }}</td>
<td><code>{{ e.type }}</code>{% if e.description %}<br><span class="muted">{{ e.description }}</span>{% endif %}</td>
<td>{{ e.column or (e.columns|join(', ') if e.columns else 'table') }}</td>
<td><code>{{ params(e) }}</code></td>
<td>{% if e.unexpected_count is not none %}{{ e.unexpected_count }} of {{ e.element_count }} unexpected
{%- if e.missing_count %}, {{ e.missing_count }} missing{% endif %}
{%- elif e.observed is not none %}{{ e.observed }}{% endif %}
{%- if e.error %} <span class="bad">error: {{ e.error }}</span>{% endif %}</td>
</tr>{% endfor %}</tbody></table></details>
{% endfor %}
</body></html>
"""

_SKIP = {"column", "column_A", "column_B", "column_list"}


def _params(exp: dict) -> str:
    kwargs = exp.get("kwargs") or {}
    shown = {k: v for k, v in kwargs.items() if k not in _SKIP or
             exp["type"] == "expect_table_columns_to_match_ordered_list"}
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items()) if v is not None)
    return text if len(text) <= 240 else text[:237] + "..."


def render_contract_page(result: ContractResult) -> str:
    """The HTML page for ``result``; every value is escaped."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(result=result, params=_params)
