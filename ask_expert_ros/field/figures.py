"""The report's figures from what the robot's observer saw (``observer.json``).

Per frame (keyed by camera stamp, per edge): its result(s), whether a request went
out for it, and its own ``ExpertResponse``. How a frame was answered, as the observer
can tell it:

* ``edge``: no request was seen;
* ``expert``: its own OK response was seen (when: the observer's copy may come later
  than the edge's), with the result's label, and the result came before the deadline;
* ``crossed``: a request went out with request id r, an answer carrying r but
  another frame's stamp was heard, and the result came with no answer of its own
  heard (within 20 ms): the edge took that answer for this frame (e.g. one meant
  for a previous run of the same edge, which numbered its requests alike). The
  target is 0. ``id_reused`` marks every frame whose request id an answer for
  another frame also carried, taken or not;
* ``fallback``: otherwise (deadline, error status, no expert); the edges' own
  counters (``/diagnostics``) are reported next to these.

An edge that stops offloading on its own (no request for the frame) shows as ``edge``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

STATUS_OK = 0
# the observer hears an answer about when the edge does (same link, same host)
_SAME_TIME_NS = 20_000_000


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else None


def latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max of ``values`` (ms); None entries when empty."""
    return {
        'p50': _pct(values, 50),
        'p95': _pct(values, 95),
        'p99': _pct(values, 99),
        'max': float(max(values)) if len(values) else None,
    }


def frame_table(edge: Mapping[str, Any], deadline_ms: float) -> list[dict[str, Any]]:
    """One row per frame the camera sent to this edge: times (ns), source, counts."""
    results: dict[int, list[tuple[int, str]]] = {}
    for stamp, seen, label in edge['results']:
        results.setdefault(int(stamp), []).append((int(seen), label))
    request_id: dict[int, int] = {}
    stamps_of_id: dict[int, set[int]] = {}
    for stamp, _seen, rid, *_size in edge['requests']:
        request_id.setdefault(int(stamp), int(rid))
        stamps_of_id.setdefault(int(rid), set()).add(int(stamp))
    responses: dict[int, tuple[int, int, str]] = {}
    # request id -> when an answer carrying it, for some other frame, was heard
    foreign_answer_ns: dict[int, list[int]] = {}
    for stamp, seen, rid, status, label in edge['responses']:
        responses.setdefault(int(stamp), (int(seen), int(status), label))
        for other in stamps_of_id.get(int(rid), ()):
            if other != int(stamp):
                foreign_answer_ns.setdefault(other, []).append(int(seen))
    rows = []
    for stamp, truth in edge['frames']:
        stamp = int(stamp)
        got = results.get(stamp, [])
        row: dict[str, Any] = {'stamp_ns': stamp, 'truth': truth, 'results': len(got)}
        row['id_reused'] = stamp in foreign_answer_ns
        if got:
            seen, label = got[0]
            latency = (seen - stamp) / 1e6
            row.update(result_ns=seen, label=label, latency_ms=latency)
            own = responses.get(stamp)
            heard = own is not None and own[0] <= seen + _SAME_TIME_NS
            foreign = [t for t in foreign_answer_ns.get(stamp, ()) if t <= seen + _SAME_TIME_NS]
            if stamp not in request_id:
                source = 'edge'
            elif not heard and foreign:
                source = 'crossed'
            elif own is not None and own[1] == STATUS_OK and own[2] == label:
                # the observer's copy of the answer may come later than the edge's (a
                # lost datagram, resent): the label and the deadline still tell
                source = 'expert' if latency < deadline_ms else 'fallback'
            else:
                source = 'fallback'
            row['source'] = source
            row['crossed'] = source == 'crossed'
        rows.append(row)
    return rows


def recovery_s(rows: Sequence[Mapping[str, Any]], cleared_ns: int) -> float | None:
    """Seconds from the fault's end to the first expert answer for a frame sent after it."""
    after = [
        r['result_ns'] for r in rows if r['stamp_ns'] >= cleared_ns and r.get('source') == 'expert'
    ]
    return (min(after) - cleared_ns) / 1e9 if after else None


def summarize(
    observed: Mapping[str, Any],
    deadline_ms: float,
    cleared_ns: int | None = None,
    exclude: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Totals over every edge, and per edge.

    Args:
        observed: The observer's report.
        deadline_ms: The edges' deadline.
        cleared_ns: Wall time the fault ended (recovery is measured from it).
        exclude: Per edge, a window ``(from_ns, to_ns)`` of frames a killed edge process
            took with it (sent to it before it died, never answered): counted as
            ``died_with_edge``, not as lost.
    """
    per_edge = {}
    all_rows = []
    for name, edge in observed['edges'].items():
        rows = frame_table(edge, deadline_ms)
        window = (exclude or {}).get(name)
        for r in rows:
            r['edge'] = name
            r['died_with_edge'] = (
                window is not None
                and r['results'] == 0
                and window[0] <= r['stamp_ns'] <= window[1]
            )
        all_rows.extend(rows)
        per_edge[name] = _totals(rows, edge.get('not_sent', 0), observed)
        per_edge[name]['offload_mbps'] = offload_mbps([edge], observed)
    totals = _totals(
        all_rows, sum(e.get('not_sent', 0) for e in observed['edges'].values()), observed
    )
    totals['offload_mbps'] = offload_mbps(list(observed['edges'].values()), observed)
    # what the observer heard on the shared topics (a deaf observer shows here, not as
    # fallbacks the edges did not make)
    totals['requests_heard'] = sum(len(e['requests']) for e in observed['edges'].values())
    totals['responses_heard'] = sum(len(e['responses']) for e in observed['edges'].values())
    if cleared_ns is not None:
        totals['recovery_s'] = recovery_s(all_rows, cleared_ns)
    return {'totals': totals, 'per_edge': per_edge, 'rows': all_rows}


def offload_mbps(edges: Sequence[Mapping[str, Any]], observed: Mapping[str, Any]) -> float | None:
    """Mbit/s of ExpertRequest CDR the edges sent for frames of the stream (the
    observer's own count of the bytes; None when its rows carry no sizes)."""
    start, end = observed['started_ns'], observed['ended_ns']
    sizes = [
        row[3]
        for edge in edges
        for row in edge['requests']
        if len(row) > 3 and start <= int(row[0]) <= end
    ]
    if not sizes and any(len(row) <= 3 for e in edges for row in e['requests']):
        return None
    return 8 * sum(sizes) / max(end - start, 1) * 1e3


def link_series(observed: Mapping[str, Any]) -> dict[str, list[list[Any]]]:
    """Per edge, from its /diagnostics: ``[wall ns, tau, offload Mbit/s, budget Mbit/s,
    expert state, tau reason]`` at every record (the tau controller and the health
    tracker over time)."""
    series: dict[str, list[list[Any]]] = {}
    for now, name, values in observed.get('diagnostics_series', []):
        if 'tau' not in values:
            continue
        series.setdefault(name, []).append(
            [
                int(now),
                float(values['tau']),
                float(values.get('offload_mbps', 'nan')),
                float(values.get('offload_budget_mbps', '0')),
                values.get('expert_state', ''),
                values.get('tau_reason', ''),
            ]
        )
    return series


def _totals(
    rows: Sequence[Mapping[str, Any]], not_sent: int, observed: Mapping[str, Any]
) -> dict[str, Any]:
    n = len(rows)
    answered = [r for r in rows if r['results']]
    sources = [r.get('source') for r in answered]
    duration_s = (observed['ended_ns'] - observed['started_ns']) / 1e9
    died = sum(bool(r.get('died_with_edge')) for r in rows)
    return {
        'frames_in': n,
        'results_out': len(answered),
        'lost': n - len(answered) - died,
        'died_with_edge': died,
        'duplicates': sum(max(r['results'] - 1, 0) for r in rows),
        'crossed': sum(bool(r.get('crossed')) for r in rows),
        'id_reused': sum(bool(r.get('id_reused')) for r in rows),
        'not_sent_edge_down': not_sent,
        'edge_pct': 100.0 * sources.count('edge') / n if n else 0.0,
        'expert_pct': 100.0 * sources.count('expert') / n if n else 0.0,
        'fallback_pct': 100.0 * sources.count('fallback') / n if n else 0.0,
        'offloaded': sum(s != 'edge' for s in sources),
        'accuracy': (
            float(np.mean([r['label'] == observed['class_names'][r['truth']] for r in answered]))
            if answered and 'class_names' in observed
            else None
        ),
        'latency_ms': latency_stats([r['latency_ms'] for r in answered]),
        'achieved_fps': n / duration_s if duration_s > 0 else 0.0,
    }
