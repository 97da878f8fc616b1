"""Recommendations: the ranked list with its evidence, and the generated files (YAML, markdown, JSON) to download."""

from __future__ import annotations

import io
import zipfile

import polars as pl
import streamlit as st

from analysis.errors import AnalysisError
from dashboards import columns, data, evidence, fmt, links, tables
from warehouse.errors import WarehouseError

page = data.current()
st.title("Recommendations")
st.caption(page.caption())
w = page.window
try:
    found = data.recommendations(
        str(page.root),
        page.version,
        w.start.isoformat(),
        w.end.isoformat(),
        page.source.key,
        page.source,
    )
except (AnalysisError, WarehouseError) as exc:  # an expected failure: one line, as the CLI prints it
    st.error(str(exc))
    st.stop()
items = page.filters.rows([{**item, **(item.get("target") or {})} for item in found["items"]])
query = {k: st.query_params[k] for k in (links.NAMESPACE, links.WORKLOAD, links.UNALLOCATED) if k in st.query_params}
focus = links.asked(query)
if focus is not None:
    items = [item for item in items if links.matches(item, query)]
    st.info(
        f"Showing what removes the waste of **{focus}**: {len(items)} recommendation(s)."
        if items
        else f"No recommendation in this window targets **{focus}**: its idle time is too short, too recent or "
        "too uncertain to act on, or another change already covers it (see the full list)."
    )
    st.page_link(links.RECOMMENDATIONS, label="Show every recommendation", icon=":material/list:")
planned = [item for item in items if item.get("in_plan")]
total = sum(float(item.get("plan_savings_usd_month") or 0.0) for item in planned)
expected = sum(float(item.get("plan_expected_usd_month") or 0.0) for item in planned)
alone = sum(float(item.get("savings_usd_month") or 0.0) for item in items)

count, savings, likely = st.columns(3)
count.metric(
    "Recommendations",
    fmt.count(len(items)),
    help=page.help("Ranked by score: savings x confidence / (1 + pods restarted + 4 x nodes drained)."),
)
savings.metric(
    "Plan savings per month",
    fmt.usd(total),
    help=page.help(
        "What the changes applied together remove from the bill: node-hours that go away x their price (each "
        "cluster's plan; README, Definitions, Plan savings (node-hours))."
    ),
)
likely.metric(
    "Expected plan savings per month",
    fmt.usd(expected),
    help=page.help("Plan savings x confidence: what the evidence supports."),
)
st.caption(
    f"{len(planned)} of {len(items)} recommendations are in the plan. Each one applied alone would save "
    f"{fmt.usd(alone)} a month by its own GPU-hours; they overlap, so that does not add up."
)
if page.filters.active:
    st.caption("Filtered to the recommendations whose target matches the sidebar filters.")

if not items:
    if focus is None:
        st.info("Nothing to recommend in this window.")
else:
    table = pl.DataFrame(
        [
            {
                "rank": item.get("rank"),
                "kind": item.get("kind"),
                "change": item.get("change"),
                "in_plan": bool(item.get("in_plan")),
                "plan_savings_usd_month": item.get("plan_savings_usd_month"),
                "savings_usd_month": item.get("savings_usd_month"),
                "confidence": item.get("confidence"),
                "expected_usd_month": item.get("expected_savings_usd_month"),
                "score": item.get("score"),
                "risk": str(item.get("risk")),
                "disruption": ", ".join(f"{k}={v}" for k, v in (item.get("disruption") or {}).items()) or None,
                "target": ", ".join(f"{k}={v}" for k, v in (item.get("target") or {}).items() if v is not None),
                "price_source": item.get("price_source"),
                "evidence": links.evidence_url(str(item.get("kind")), item.get("target") or {}),
            }
            for item in items
        ],
        infer_schema_length=None,
    )
    tables.table(table, columns.RECOMMENDATIONS)
    st.subheader("Evidence")
    labels = {
        i: f"{i + 1}. {item.get('kind')}: {item.get('change')} ({fmt.usd(item.get('savings_usd_month'))}/month, "
        f"confidence {float(item.get('confidence') or 0.0):.2f}, "
        f"expected {fmt.usd(item.get('expected_savings_usd_month'))}/month)"
        for i, item in enumerate(items)
    }
    chosen = st.selectbox("Recommendation", list(labels), format_func=labels.__getitem__, key="rec_evidence")
    item = items[chosen if chosen is not None and chosen < len(items) else 0]
    evidence_page, evidence_query = links.evidence(str(item.get("kind")), item.get("target") or {})
    st.page_link(
        evidence_page, label="See the evidence on its page", icon=":material/search:", query_params=evidence_query
    )
    with st.container(border=True):
        st.markdown(evidence.outline(item.get("evidence") or {}) or "No evidence recorded.")

files = found["files"]
if files:
    st.subheader("Generated files")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(files.items()):
            archive.writestr(name, text)
    st.download_button(
        "Download all (zip)", buffer.getvalue(), file_name="gpuledger-recommendations.zip", key="rec_zip"
    )
    name = st.selectbox("File", sorted(files), key="rec_file")
    if name is not None:
        text = files[name]
        yaml = name.endswith((".yaml", ".yml"))
        st.download_button(
            f"Download {name}",
            text,
            file_name=name.rsplit("/", 1)[-1],
            mime="application/yaml" if yaml else "text/plain",
            key="rec_file_download",
        )
        language = "yaml" if yaml else ("json" if name.endswith(".json") else "markdown")
        st.code(text if len(text) < 20000 else text[:20000] + "\n...", language=language)
