"""Figures of ``make bench-integrity`` from its worlds: rates with intervals, and the Markdown."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.integrity_worlds import wilson_interval

if TYPE_CHECKING:
    from benchmarks.bench_integrity import WorldResult

NULL_KINDS = ("random", "shuffled")
SIZE_TARGET = 0.05  # docs/spec.md §7: at most 5 % of null regime-worlds pass COLD
POWER_TARGET = 0.80  # and at least 80 % of worlds with a planted edge of Sharpe about 1.5
TARGET_SHARPE = 1.5


def _share(hits: int, n: int) -> dict[str, float | int]:
    return asdict(wilson_interval(hits, n)) if n else {"hits": 0, "n": 0}


def _level_pass_rates(results: Sequence["WorldResult"]) -> dict[str, dict[str, float | int]]:
    levels: dict[int, list[bool]] = {}
    for r in results:
        for lv in r.outcome.levels:
            levels.setdefault(lv.level, []).append(lv.passed)
    return {str(k): _share(sum(v), len(v)) for k, v in sorted(levels.items())}


def _null(results: Sequence["WorldResult"]) -> dict[str, Any]:
    rows = [g for r in results for g in r.outcome.regimes]
    by_kind = {
        kind: _share(
            sum(g.passed_cold for r in results if r.spec.kind == kind for g in r.outcome.regimes),
            sum(len(r.outcome.regimes) for r in results if r.spec.kind == kind),
        )
        for kind in NULL_KINDS
    }
    regimes = sorted({g.regime for g in rows})
    by_regime = {
        name: _share(
            sum(g.passed_cold for g in rows if g.regime == name),
            sum(g.regime == name for g in rows),
        )
        for name in regimes
    }
    return {
        "worlds": len(results),
        "false_promotion": _share(sum(g.passed_cold for g in rows), len(rows)),
        "by_kind": by_kind,
        "by_regime": by_regime,
        "worlds_with_any_promotion": _share(
            sum(any(g.passed_cold for g in r.outcome.regimes) for r in results), len(results)
        ),
        "level_pass_rates": _level_pass_rates(results),
    }


def _planted(results: Sequence["WorldResult"]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for hit in sorted({r.spec.hit_rate for r in results}):
        group = [r for r in results if r.spec.hit_rate == hit]
        holdout = [r.true_sharpe_holdout for r in group if r.true_sharpe_holdout is not None]
        history = [r.true_sharpe_history for r in group if r.true_sharpe_history is not None]
        rows = [g for r in group for g in r.outcome.regimes]
        out.append(
            {
                "hit_rate": hit,
                "worlds": len(group),
                "true_sharpe_holdout_mean": float(np.mean(holdout)) if holdout else None,
                "true_sharpe_holdout_median": float(np.median(holdout)) if holdout else None,
                "true_sharpe_history_mean": float(np.mean(history)) if history else None,
                # A world counts when every planted regime's set passes COLD.
                "power": _share(
                    sum(
                        bool(r.outcome.regimes) and all(g.passed_cold for g in r.outcome.regimes)
                        for r in group
                    ),
                    len(group),
                ),
                "worlds_with_any_regime_passing": _share(
                    sum(any(g.passed_cold for g in r.outcome.regimes) for r in group), len(group)
                ),
                "regime_worlds_passing": _share(sum(g.passed_cold for g in rows), len(rows)),
                "level_pass_rates": _level_pass_rates(group),
            }
        )
    return out


def _real(results: Sequence["WorldResult"]) -> list[dict[str, Any]]:
    return [
        {
            "strategy": r.spec.strategy,
            "levels": [asdict(lv) for lv in r.outcome.levels],
            "regimes": [asdict(g) for g in r.outcome.regimes],
        }
        for r in results
    ]


def summarize(results: Sequence["WorldResult"], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The benchmark's figures: false-promotion rate, power per edge size, the real bars."""
    planted = _planted([r for r in results if r.spec.kind == "planted"])
    near = [p for p in planted if p["true_sharpe_holdout_mean"] is not None]
    closest = (
        min(near, key=lambda p: abs(p["true_sharpe_holdout_mean"] - TARGET_SHARPE))
        if near
        else None
    )
    null = _null([r for r in results if r.spec.kind in NULL_KINDS])
    return {
        "settings": dict(settings),
        "null": null,
        "planted": planted,
        "real": _real([r for r in results if r.spec.kind == "real"]),
        "verdict": {
            "false_promotion_rate": null["false_promotion"].get("rate"),
            "false_promotion_target_met": null["false_promotion"].get("rate", 1.0) <= SIZE_TARGET,
            "power_edge_hit_rate": closest["hit_rate"] if closest else None,
            "power_edge_true_sharpe": closest["true_sharpe_holdout_mean"] if closest else None,
            "power": closest["power"].get("rate") if closest else None,
            "power_target_met": bool(closest and closest["power"].get("rate", 0) >= POWER_TARGET),
        },
    }


def _pct(share: Mapping[str, Any]) -> str:
    if not share.get("n"):
        return "n/a"
    return (
        f"{100 * share['rate']:.1f} % ({share['hits']}/{share['n']}; 95 % CI "
        f"{100 * share['low']:.1f}-{100 * share['high']:.1f} %)"
    )


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _settings_md(s: Mapping[str, Any]) -> list[str]:
    dens = ", ".join(f"{k} {100 * v:.2f} %" for k, v in s["density_per_strategy"].items())
    return [
        f"- Trial counts: profile `{s['trial_profile']}`, per level {s['trials_per_level']} "
        f"(walk-forward {s['walk_forward_trials_run']} trials per window, as `run_level` runs it).",
        f"- Worlds: {s['worlds']}; seed {s['seed']}; {s['workers']} worker processes.",
        f"- Signal density of the random and planted files: {100 * s['density']:.2f} % of bars "
        f"(the mean of the built-in strategies' densities: {dens}).",
        f"- Planted edge: side of the next {s['horizon_bars']} bars' move with probability "
        f"{s['hit_rates']}; shuffled worlds permute blocks of {s['shuffle_block_bars']} bars.",
    ]


def markdown(summary: Mapping[str, Any]) -> str:
    """The results file a reader sees."""
    s, null, v = summary["settings"], summary["null"], summary["verdict"]
    lines = [
        "# Integrity benchmark: power and size of the whole pipeline",
        "",
        f"Machine: {summary['machine']}; load average at start {summary['load_average_at_start']}"
        f", at end {summary['load_average_at_end']}; {summary['seconds']:.0f} s in all.",
        "",
        *_settings_md(s),
        "",
        "## Null worlds (no edge)",
        "",
        f"False-promotion rate (regime-worlds whose candidate passes COLD; target <= 5 %): "
        f"**{_pct(null['false_promotion'])}** over {null['worlds']} worlds.",
        "",
        "| subset | passes COLD |",
        "|---|---|",
        *[f"| {k} | {_pct(x)} |" for k, x in null["by_kind"].items()],
        *[f"| regime {k} | {_pct(x)} |" for k, x in null["by_regime"].items()],
        f"| worlds with any regime passing | {_pct(null['worlds_with_any_promotion'])} |",
        *[
            f"| level {k} passes its criteria | {_pct(x)} |"
            for k, x in null["level_pass_rates"].items()
        ],
        "",
        "## Planted-edge worlds: the power curve",
        "",
        "Power = share of worlds in which every planted regime's set passes COLD (every regime "
        "is planted). True Sharpe: the planted signals traded with the default exits, both "
        "sides, after costs.",
        "",
        "| hit rate | worlds | true Sharpe, hold-out (mean / median) | true Sharpe, history | "
        "power | any regime passes | regime-worlds passing |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in summary["planted"]:
        lines.append(
            f"| {p['hit_rate']:g} | {p['worlds']} | {_num(p['true_sharpe_holdout_mean'])} / "
            f"{_num(p['true_sharpe_holdout_median'])} | {_num(p['true_sharpe_history_mean'])} | "
            f"{_pct(p['power'])} | {_pct(p['worlds_with_any_regime_passing'])} | "
            f"{_pct(p['regime_worlds_passing'])} |"
        )
    lines += ["", "Levels passing their criteria in planted worlds:", ""]
    for p in summary["planted"]:
        rates = "; ".join(f"L{k} {_pct(x)}" for k, x in p["level_pass_rates"].items())
        lines.append(f"- hit rate {p['hit_rate']:g}: {rates}")
    lines += [
        "",
        f"Edge closest to true Sharpe {TARGET_SHARPE}: hit rate {v['power_edge_hit_rate']} "
        f"(hold-out Sharpe {_num(v['power_edge_true_sharpe'])}), power "
        f"{_num(None if v['power'] is None else 100 * v['power'], 1)} % (target >= 80 %: "
        f"{'met' if v['power_target_met'] else 'not met'}). False-promotion target: "
        f"{'met' if v['false_promotion_target_met'] else 'not met'}.",
        "",
        "## The bundled real bars with each built-in strategy",
        "",
    ]
    lines += _real_md(summary["real"])
    return "\n".join(lines) + "\n"


def _real_md(real: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| strategy | level | passed | test Sharpe | test win rate | test trades | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for world in real:
        for lv in world["levels"]:
            t = lv["test"]
            failed = "skipped" if lv["skipped"] else "; ".join(lv["failed_criteria"])
            lines.append(
                f"| {world['strategy']} | {lv['level']} | {lv['passed']} | "
                f"{_num(t.get('sharpe'))} | {_num(t.get('win_rate_pct'), 1)} | "
                f"{_num(t.get('n_trades'), 0)} | {failed} |"
            )
    lines += [
        "",
        "| strategy | regime | level | COLD | Sharpe | win rate | trades | PnL $ | days |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for world in real:
        for g in world["regimes"]:
            m = g["metrics"]
            lines.append(
                f"| {world['strategy']} | {g['regime']} | {g['level']} | {g['decision']} | "
                f"{_num(m.get('sharpe'))} | {_num(m.get('win_rate_pct'), 1)} | "
                f"{_num(m.get('n_trades'), 0)} | {_num(m.get('pnl_usd'))} | "
                f"{_num(m.get('window_days'), 0)} |"
            )
    return lines
