"""The Markdown summary of heads.json (`python -m train.heads` prints it and writes summary.md):
importance, the pruning curve, alignment, roles and gates, from the JSON's content alone.
A pruned run's layers have fewer heads than the widest: their missing cells are shown as "–"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

ROLE_NAMES = {"positional": "positional", "rare_token": "rare-token", "sink": "sink", "alignment": "alignment"}


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def _cells(values: Sequence[Any], width: int, digits: int = 3) -> list[Any]:
    """One layer's per-head values padded to the table's width with "–" (heads a layer lacks)."""
    return [round(v, digits) if isinstance(v, float) else v for v in values] + ["–"] * (width - len(values))


def role_label(head: dict) -> str:
    """"positional -1, sink" for one head's entry in heads.json's roles; "–" for none."""
    names = []
    for role in head["roles"]:
        name = ROLE_NAMES.get(role, role)
        if role == "positional" and head.get("positional_offset") is not None:
            name += f" {head['positional_offset']:+d}"
        names.append(name)
    return ", ".join(names) or "–"


def roles_section(roles: Optional[dict], heads: int) -> list[str]:
    if not roles:
        return []
    t = roles["thresholds"]
    lines = ["", "## Roles (Voita et al. 2019)", "",
             f"positional: the argmax is at one relative offset in >= {t['positional_share']:.0%} of the rows; "
             f"rare-token: the argmax is the rarest visible token >= {t['rare_lift']:g}x as often as chance "
             f"(frequencies: {roles['frequencies']}); sink: >= {t['sink_mass']:.0%} of the mass on BOS/EOS; "
             "alignment: a cross head's alignment F1 beats the length-scaled diagonal.", ""]
    rows = [[kind.replace("_", " "), layer] + _cells([role_label(h) for h in per_head], heads)
            for kind in ("encoder_self", "decoder_self", "cross") for layer, per_head in enumerate(roles.get(kind, []))]
    lines += _table(["attention", "layer"] + [f"head {h}" for h in range(heads)], rows)
    counts = ", ".join(f"{n} {ROLE_NAMES[r]}" for r, n in roles["counts"].items())
    return lines + ["", f"Heads with each role: {counts}."]


def gates_section(gates: Optional[dict], heads: int) -> list[str]:
    if not gates:
        return []
    lines = ["", "## Gates (Hard Concrete)", "",
             "P(gate open) of each head, the expected L0 norm the penalty train.gate_l0 weighs; the evaluation "
             "gate in brackets (0 = the head is off when decoding).", ""]
    rows = [[kind.replace("_", " "), layer] + _cells([f"{p:.2f} ({z:.2f})" for p, z in zip(p_row, z_row)], heads)
            for kind, per_layer in gates["open_probability"].items()
            for layer, (p_row, z_row) in enumerate(zip(per_layer, gates["eval_gate"][kind]))]
    return lines + _table(["attention", "layer"] + [f"head {h}" for h in range(heads)], rows)


def orders_section(orders: Optional[dict], M: str) -> list[str]:
    """The pruning orders' scores at 25/50/75% of heads removed (mean ± sd over seeds)."""
    if not orders:
        return []
    shares = list(next(iter(orders.values()))["at_shares"])
    cell = lambda v, seeds: f"{v['mean']:.2f}" + (f" ± {v['sd']:.2f}" if seeds > 1 else "")
    share_cell = lambda v, seeds: f"{v['mean']:.0%}" + (f" ± {v['sd']:.0%}" if seeds > 1 else "")
    rows = [[name, o["seeds"]] + [cell(o["at_shares"][s], o["seeds"]) for s in shares]
            + [share_cell(o["prunable_share_1bleu"], o["seeds"])] for name, o in orders.items()]
    return ["", "## Pruning orders", "",
            f"{M} with a share of the heads switched off, by order (random: mean ± sd over seeds); the last "
            f"column is the share removable for < 1 {M} lost on each order's own steps.", ""] + _table(
        ["order", "seeds"] + [f"{M} at {s} off" for s in shares] + ["prunable (< 1 lost)"], rows)


def markdown_summary(r: dict) -> str:
    m, M = r["metric"], r["metric"].upper()
    lines = [f"# Heads of {Path(r['run_dir']).name} (step {r['step']}, {r['split']}: {r['examples']} pairs)", "",
             f"Unpruned: validation loss {r['baseline']['val_loss']:.3f}, {M} {r['baseline'][m]:.2f} "
             f"({'greedy' if r['decode']['beam_size'] == 1 else 'beam ' + str(r['decode']['beam_size'])}, "
             f"{r['bleu_examples']} pairs).", "",
             "## Importance", "",
             "Mean |d loss / d gate| per target token, divided by the layer's L2 norm (Michel et al. 2019).", ""]
    heads = r["model"]["num_heads"]
    rows = [[kind.replace("_", " "), layer] + _cells(values, heads)
            for kind, imp in r["importance"].items() for layer, values in enumerate(imp["normalized"])]
    lines += _table(["attention", "layer"] + [f"head {h}" for h in range(heads)], rows)
    lines += ["", f"## Pruning ({r['model']['heads_total']} heads, least important first)", ""]
    base = r["pruning_curve"][0][m]
    lines += _table(["heads off", "share", "val loss", M, f"{M} lost"],
                    [[p["heads_off"], f"{p['share']:.0%}", p["val_loss"], round(p[m], 2), round(base - p[m], 2)]
                     for p in r["pruning_curve"]])
    lines += ["", f"**{r['prunable_share_1bleu']:.0%} of the heads can be switched off for less than 1 {M} lost.**"]
    if base < 5:  # near the floor nothing can drop by a whole point: the share says little
        lines += [f"(The unpruned model scores only {base:.2f} {M}; train longer for a meaningful share.)"]
    lines += orders_section(r.get("pruning_orders"), M)
    a = r["alignment"]
    if a is not None:
        out = a["output_rows"]
        lines += ["", f"## Alignment ({a['examples']} pairs, {a['gold_links']} gold links)", "",
                  "F1 of each cross-attention head's argmax word alignment (rows = the predicted token); "
                  "avg = the layer's head-averaged attention.", ""]
        lines += _table(["layer"] + [f"head {h}" for h in range(heads)] + ["avg"],
                        [[layer] + _cells(f1, heads) + [round(out["layer_average"]["f1"][layer], 3)]
                         for layer, f1 in enumerate(out["heads"]["f1"])])
        desc = lambda b: (f"F1 {b['f1']:.3f}, precision {b['precision']:.3f}, recall {b['recall']:.3f}, "
                          f"AER {b['aer']:.3f}")
        b, la, sh = out["best_head"], out["best_layer_average"], a["input_rows"]["best_head"]
        lines += ["", f"Best head: layer {b['layer']} head {b['head']}: {desc(b)}.",
                  f"Best layer average: layer {la['layer']}: {desc(la)}.",
                  f"With rows = input token (shift-att): best head layer {sh['layer']} head {sh['head']}: {desc(sh)}.",
                  f"Reference without a model, the length-scaled diagonal: {desc(a['diagonal_baseline'])}.",
                  f"Ceiling for argmax aligners (gold-guided, one link per subword): {desc(a['argmax_ceiling'])}."]
    lines += roles_section(r.get("roles"), heads)
    lines += gates_section(r.get("gates"), heads)
    return "\n".join(lines) + "\n"
