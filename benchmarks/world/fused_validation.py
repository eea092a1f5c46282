"""Choosing the fused score on a validation split of the benchmark world (never its test sets).

Run:   python benchmarks/world/fused_validation.py [--seed 0] [--every 2] [--out fused_validation_results]
Smoke: python benchmarks/world/fused_validation.py --quick --out /tmp/fused      (< 2 min; pipeline check only)

Needs world A of the seed and its generic no-branch in the world cache (``run.py`` builds them, ~20 min).
Validation sets (the world's *training* images; the held-out images and DTD are the test sets):
ID = the 100 ID classes' training images (40 each); near = the other 100 classes' training images;
far = the ImageNet-sample images outside Tiny-ImageNet. Caveat: the world's heads were trained on the Tiny
training images (ID and near alike) and the generic no-branch on exactly the far images, so the far figures
favour the CLIPN scores; the choice rests on near-OOD first.

Candidates, all parameter-free given the negatives (CSP's pool, every ``--every``-th noun, one "photo"
template, NegLabel's defaults), scored from the same features:
- components: MCM, ATD, CTW, NegLabel (nouns only), CSP;
- ``atd-neg``: ATD over a softmax whose denominator also holds the negatives, averaged over NegLabel's groups
  (``oodfilter_csp.atd_over_negatives``); ``atd-neg-1``: the same with all negatives in one group;
- ``product``: 1 − (1 − ATD)(1 − CSP), the two ID probabilities as independent evidence, with ATD's rule
  (``oodfilter_csp.fused_scores``, the shipped ``fused``);
- ``mean``: (ATD + CSP) / 2.
Prints a table and writes the figures (and the configuration) as ``fused_validation.json`` into --out.

``--quick`` scores every candidate on run.py's quick world (seed 0), building what its cache lacks, with a
small pool: every 200th noun and (quick only) every 200th modifier unless --every says otherwise; its
figures mean nothing.

Seed 0, --every 2 (8013 negatives, 2996 of them conjugated; 4000 ID, 4000 near, 800 far images; AMD EPYC,
2 shared cores, 162 s with the pool's encodings cached, ~13 min without):

    method     near AUROC near FPR95  far AUROC  far FPR95  decisions (ID kept, near / far caught)
    mcm            0.9687     0.0870     0.9745     0.0800
    atd            0.9542     0.1720     0.9814     0.0712  1.000, 0.224 / 0.361
    ctw            0.9294     0.2800     0.9742     0.1100  1.000, 0.006 / 0.025
    neglabel       0.9470     0.1445     0.8564     0.4088
    csp            0.9463     0.1475     0.8562     0.4075
    atd-neg        0.9443     0.1737     0.9164     0.3088  0.994, 0.792 / 0.632
    atd-neg-1      0.9428     0.1732     0.8795     0.4175  0.287, 0.990 / 0.984
    product        0.9608     0.1268     0.9726     0.1075  1.000, 0.639 / 0.479
    mean           0.9608     0.1263     0.9726     0.1075

``product`` ranks best of the fused forms on both sets and both metrics, above both its parts on near-OOD
(ATD, CSP), and its rule keeps every ID image: it is the shipped ``fused``. ``mean`` ranks the same but has no
probability to put a rule on. MCM alone ranks near-OOD best in this world.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
import torch.nn.functional as F

import oodfilter
from benchmarks.world.build import WORLD_TEMPLATES, load_feature_bank
from benchmarks.world.data import load_world_data
from benchmarks.world.evaluation import make_scorer, set_metrics
from benchmarks.world.run import QUICK_DATA, TEMPLATES, generic_no_branch_model
from oodfilter.scoring import functional as fn
from oodfilter.scoring.functional import ScoreOutput
from oodfilter.scoring.methods import FeatureBatch
from oodfilter_csp import CSP, Fused, atd_over_negatives, fused_scores
from oodfilter_csp.pool import load_modifiers
from oodfilter_neglabel import NegLabel, load_vocabulary, neglabel_scores

FORMS = ("atd-neg", "atd-neg-1", "product", "mean")


class _Forms(Fused):
    """The fused candidates over one prepared pool; :attr:`form` picks which one scores."""

    name: ClassVar[str] = "fused-forms"
    form = "atd-neg"

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        pool = self._prepared()
        cos_neg = batch.features.float() @ pool.vectors.float().T  # (B, M)
        if self.form in ("atd-neg", "atd-neg-1"):
            groups = pool.group_of if self.form == "atd-neg" else torch.zeros_like(pool.group_of)
            return atd_over_negatives(batch.logits_yes, batch.logits_no, batch.logit_scale * cos_neg, groups)
        if self.form == "product":
            return fused_scores(batch.logits_yes, batch.logits_no, batch.cosines_yes, cos_neg, pool.group_of)
        atd = fn.atd(batch.logits_yes, batch.logits_no).ood_score  # (B,)
        csp = neglabel_scores(batch.cosines_yes, cos_neg, pool.group_of, 0.01)  # (B,)
        return ScoreOutput((atd + csp) / 2, None)


def validation_features(model: oodfilter.CLIPN, data, bank) -> dict[str, torch.Tensor]:
    """Normalised world features of the validation sets (see the module docstring)."""
    position = set(data.id_classes)
    files = {"id": [i.path for i in data.train if i.label in position],
             "near": [i.path for i in data.train if i.label not in position],
             "far": [i.path for i in data.generic]}
    head = model.clip.visual.head
    with torch.no_grad():
        return {name: F.normalize(head(torch.stack([bank.pooled[f] for f in paths])), dim=-1)
                for name, paths in files.items()}


def _report(scores: dict[str, oodfilter.ScoreResult]) -> dict[str, object]:
    out: dict[str, object] = {s: set_metrics(scores["id"].ood_score, scores[s].ood_score) for s in ("near", "far")}
    if scores["id"].is_ood is not None:
        out["id_kept"] = float((~scores["id"].is_ood).float().mean())
        out["caught"] = {s: float(scores[s].is_ood.float().mean()) for s in ("near", "far")}  # type: ignore[union-attr]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=None,
                        help="keep every n-th noun of the vocabulary (default 2; 200 with --quick)")
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--out", default="fused_validation_results", help="folder for fused_validation.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run on the quick world, seed 0 (< 2 min)")
    args = parser.parse_args()
    if args.quick:
        args.seed = 0
    if args.every is None:
        args.every = 200 if args.quick else 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    cache = Path(args.cache_dir)
    data = load_world_data(**QUICK_DATA) if args.quick else load_world_data()  # as run.py builds them
    bank = load_feature_bank(data, cache, templates=WORLD_TEMPLATES[:2] if args.quick else WORLD_TEMPLATES)
    with tempfile.TemporaryDirectory() as trees:
        model = generic_no_branch_model(data, bank, cache, args.seed, args.quick, Path(trees))
    names = [data.names[c] for c in data.id_classes]
    features = validation_features(model, data, bank)
    nouns = list(load_vocabulary())[:: args.every]
    modifiers = list(load_modifiers())[:: args.every] if args.quick else None  # None: the shipped ~2k
    reports: dict[str, dict[str, object]] = {}
    for method, templates in (("mcm", TEMPLATES), ("atd", TEMPLATES), ("ctw", TEMPLATES),
                              ("neglabel", "photo"), ("csp", "photo")):
        chosen = NegLabel(nouns) if method == "neglabel" else CSP(nouns, modifiers) if method == "csp" else method
        scorer = make_scorer(model, names, chosen, cache, templates)  # type: ignore[arg-type]
        reports[method] = _report({s: scorer.score_features(f) for s, f in features.items()})
        print(f"{method}: {time.perf_counter() - started:.0f} s", flush=True)
    forms = _Forms(nouns, modifiers, templates="photo")
    scorer = make_scorer(model, names, forms, cache, TEMPLATES)
    for form in FORMS:
        forms.form = form
        reports[form] = _report({s: scorer.score_features(f) for s, f in features.items()})
    print(f"logit scale {model.logit_scale:.1f}; negatives {len(forms.negative_names)} "
          f"({sum(n.split()[-1] in forms.config.superclasses for n in forms.negative_names)} conjugated)")
    print(f"{'method':10} {'near AUROC':>10} {'near FPR95':>10} {'far AUROC':>10} {'far FPR95':>10}  decisions")
    for method, r in reports.items():
        near, far = r["near"], r["far"]
        rule = f"ID kept {r['id_kept']:.3f}, near caught {r['caught']['near']:.3f}, far caught " \
               f"{r['caught']['far']:.3f}" if "id_kept" in r else ""  # type: ignore[index]
        print(f"{method:10} {near['auroc']:10.4f} {near['fpr95']:10.4f} {far['auroc']:10.4f} "  # type: ignore[index]
              f"{far['fpr95']:10.4f}  {rule}")  # type: ignore[index]
    record = {"seed": args.seed, "every": args.every, "quick": args.quick, "nouns": len(nouns),
              "modifiers": len(modifiers) if modifiers is not None else len(load_modifiers()),
              "negatives": len(forms.negative_names), "reports": reports, "seconds": time.perf_counter() - started,
              "machine": platform.processor() or platform.machine(), "sizes": {s: len(f) for s, f in features.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fused_validation.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
