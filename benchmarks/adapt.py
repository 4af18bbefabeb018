"""Should a short self-supervised adaptation run by default? The gap to BM4D at low noise, with and without it.

    python benchmarks/adapt.py [--minutes 1] [--levels 3 5] [--volumes colin27 spine_t2w ...]
    python benchmarks/adapt.py --redecide   # what --adapt auto decides now, on the recorded draws

On the quality benchmark's own volumes and noise draws (same seeds as quality.py, so BM4D given the true
sigma is read from results/quality.json), the default model as shipped against the same model adapted
to the noisy crop alone for the budget, through the product's own switch (`denoise --adapt MINUTES`:
`ScanAdapter`, the recorrupted-to-recorrupted fine-tuning held in memory). Also what `--adapt auto`
decides on each draw and what it therefore scores (the adapted result where it adapts, the shipped one
where it does not). PSNR / SSIM in the volume's mask; seconds include the adaptation. Writes
results/adapt.json and results/adapt.md. ``--redecide`` asks the switch again on every recorded draw (no
denoising: seconds), so a changed rule is read off the measured scores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from common import CONTRAST_REFERENCES, RESULTS, draw_seed, machine, noise_draw, validation_volume, write_json

from MRIDenoiseLib.adaptation import ScanAdapter, decide
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.pipeline import denoise_volume
from MRIDenoiseLib.volume import Geometry, Volume


def bm4d_scores(volume: str, level: float) -> dict | None:
    """BM4D's record on the same draw in results/quality.json, if it was measured."""
    path = RESULTS / "quality.json"
    records = json.loads(path.read_text())["records"] if path.exists() else []
    return next((r for r in records if (r["volume"], r["level_percent"], r["method"]) == (volume, level, "bm4d")), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--levels", nargs="*", type=float, default=[3.0, 5.0])
    parser.add_argument("--volumes", nargs="*", default=["colin27", *CONTRAST_REFERENCES])
    parser.add_argument("--redecide", action="store_true", help="only what auto decides on the recorded draws")
    args = parser.parse_args()
    if args.redecide:
        redecide()
        return
    records = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MRIDENOISE_CACHE_DIR"] = cache  # adapted models stay out of the user's catalogue
        for name in args.volumes:
            volume = validation_volume(name)
            for level in args.levels:
                noisy = _draw(volume, level)
                shipped = denoise_volume(noisy, device="cpu")
                adapted = denoise_volume(noisy, device="cpu", adapter=ScanAdapter(args.minutes))
                auto = decide(noisy, None, "auto", None)
                bm4d = bm4d_scores(volume.name, level)
                record = {
                    "volume": volume.name,
                    "level_percent": level,
                    "shipped": evaluate(volume.clean, shipped.volume.array, volume.mask),
                    "adapted": evaluate(volume.clean, adapted.volume.array, volume.mask),
                    "bm4d": {k: bm4d[k] for k in ("psnr_foreground", "ssim_foreground")} if bm4d else None,
                    "shipped_seconds": round(shipped.seconds, 1),
                    "adapted_seconds": round(adapted.seconds, 1),
                    "steps": adapted.adaptation["steps"],
                    "auto_adapts": auto.minutes is not None,
                    "auto_reason": auto.reason,
                }
                records.append(record)
                print(json.dumps(record), flush=True)
    results = {"model": load_catalog().default_id, "machine": machine(), "minutes": args.minutes, "records": records}
    write_json(RESULTS / "adapt.json", results)
    (RESULTS / "adapt.md").write_text(markdown(results))


def _draw(volume, level: float) -> Volume:
    """The quality benchmark's noisy draw of ``volume`` at ``level`` % (its seed), with its geometry."""
    noisy_array, _ = noise_draw(volume, level, draw_seed(level))
    return Volume(noisy_array, Geometry(tuple(reversed(volume.spacing_zyx))))


def redecide() -> None:
    """Ask ``--adapt auto`` again on the draw of every record in results/adapt.json and rewrite its tables."""
    results = json.loads((RESULTS / "adapt.json").read_text())
    volumes: dict = {}
    for record in results["records"]:
        name = record["volume"] if record["volume"] in CONTRAST_REFERENCES else "colin27"
        volume = volumes.setdefault(name, validation_volume(name))
        decision = decide(_draw(volume, record["level_percent"]), None, "auto", None)
        record["auto_adapts"], record["auto_reason"] = decision.minutes is not None, decision.reason
    write_json(RESULTS / "adapt.json", results)
    (RESULTS / "adapt.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "# A short adaptation on the scan itself: the gap to BM4D at low noise",
        "",
        f"`python benchmarks/adapt.py --minutes {results['minutes']:g}`; machine {results['machine']['cpu']}, "
        f"{results['machine']['torch_threads']} threads. The default model (`{results['model']}`) as shipped",
        f"and adapted for {results['minutes']:g} min on the noisy crop alone (`--adapt {results['minutes']:g}`: r2r, "
        "in memory); BM4D given the true sigma on the same draw (results/quality.json). Foreground PSNR (dB) / SSIM.",
        "`--adapt auto`: what the switch decides on the draw, and its score minus the shipped one (0 where it",
        "keeps the shipped model).",
        *([f"Runs merged into this table: {results['runs']}."] if results.get("runs") else []),
        "",
        "| volume | level | shipped | adapted | BM4D (true sigma) | adapted - shipped (dB) | adapted - BM4D (dB) "
        "| s shipped / adapted | steps | auto decides | auto - shipped (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["records"]:
        shipped, adapted, bm4d = r["shipped"], r["adapted"], r["bm4d"]
        versus = f"{adapted['psnr_foreground'] - bm4d['psnr_foreground']:+.2f}" if bm4d else "-"
        reference = f"{bm4d['psnr_foreground']:.2f} / {bm4d['ssim_foreground']:.4f}" if bm4d else "-"
        lines.append(
            f"| {r['volume']} | {r['level_percent']:g} % | {shipped['psnr_foreground']:.2f} / "
            f"{shipped['ssim_foreground']:.4f} | {adapted['psnr_foreground']:.2f} / {adapted['ssim_foreground']:.4f} | "
            f"{reference} | {adapted['psnr_foreground'] - shipped['psnr_foreground']:+.2f} | {versus} | "
            f"{r['shipped_seconds']:g} / {r['adapted_seconds']:g} | {r['steps']} | "
            f"{'adapt' if r['auto_adapts'] else 'keep: ' + r['auto_reason']} | "
            f"{(adapted['psnr_foreground'] - shipped['psnr_foreground']) if r['auto_adapts'] else 0.0:+.2f} |"
        )
    return "\n".join([*lines, "", *_summary(results["records"]), ""])


def _summary(records: list[dict]) -> list[str]:
    """Per level: what adapting every draw gained, and what ``auto`` gained by adapting where it did."""
    lines = [
        "Per level, over the references (dB): adapted minus shipped, and `auto` minus shipped.",
        "",
        "| level | draws | adapted - shipped: mean (min, max) | gained on | auto adapts | auto - shipped: mean |",
        "|---|---|---|---|---|---|",
    ]
    for level in sorted({r["level_percent"] for r in records}):
        at_level = [r for r in records if r["level_percent"] == level]
        gains = [r["adapted"]["psnr_foreground"] - r["shipped"]["psnr_foreground"] for r in at_level]
        auto = [g if r["auto_adapts"] else 0.0 for g, r in zip(gains, at_level, strict=True)]
        lines.append(
            f"| {level:g} % | {len(gains)} | {sum(gains) / len(gains):+.2f} ({min(gains):+.2f}, {max(gains):+.2f}) | "
            f"{sum(g > 0 for g in gains)} | {sum(r['auto_adapts'] for r in at_level)} | {sum(auto) / len(auto):+.2f} |"
        )
    return lines


if __name__ == "__main__":
    main()
