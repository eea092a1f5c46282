"""Offline filtering: scan once, then train on the samples the manifest keeps (no model cost in training).

Run: python examples/filter_manifest.py   (uses ../shared/data and the tiny test model)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _data import CLASSES, TEXTURES, require_data, tiny_classifier, train_steps
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from oodfilter.pipeline import ManifestFilter
from oodfilter.scan import ScanConfig, scan


def main() -> None:
    require_data()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "scan.jsonl"
        # The same as: oodfilter scan <textures> --classes ... --model test-tiny --method msp --threshold 0.28
        summary = scan(ScanConfig(inputs=[str(TEXTURES)], classes=CLASSES, out=str(manifest), model="test-tiny",
                                  method="msp", threshold=0.28))
        print(f"scanned {summary.total} images: {summary.ood} OOD, {summary.in_distribution} in-distribution")

        dataset = ImageFolder(str(TEXTURES), transform=transforms.Compose([transforms.Resize((64, 64)),
                                                                          transforms.ToTensor()]))
        kept = ManifestFilter(manifest).subset(dataset)  # the one added line
        loader = DataLoader(kept, batch_size=32, shuffle=True, num_workers=1)
        loss = train_steps(tiny_classifier(len(dataset.classes)), loader, steps=10)
        print(f"trained 10 steps on {len(kept)} of {len(dataset)} images; loss {loss:.3f}")


if __name__ == "__main__":
    main()
