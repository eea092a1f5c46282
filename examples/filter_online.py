"""Online filtering: score every batch during training and drop the OOD samples.

Three added lines (marked ###) turn an ordinary ImageFolder training loop into a filtered one: the
dataset's transform is wrapped so each decoded image also yields the filter's CLIP view (in the
workers), and the DataLoader is wrapped so each batch is scored and its OOD samples dropped.

Run: python examples/filter_online.py   (uses ../shared/data and the tiny test model)
"""

from __future__ import annotations

from _data import CLASSES, TEXTURES, require_data, tiny_classifier, train_steps
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from oodfilter.pipeline import FilteredLoader, OODFilter


def main() -> None:
    require_data()
    dataset = ImageFolder(str(TEXTURES), transform=transforms.Compose([transforms.Resize((64, 64)),
                                                                      transforms.ToTensor()]))
    ood_filter = OODFilter("test-tiny", CLASSES, method="msp", threshold=0.28, mode="drop")  ###
    dataset.transform = ood_filter.wrap_transform(dataset.transform)  ###
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=1)
    filtered = FilteredLoader(loader, ood_filter, refill=True)  ###

    loss = train_steps(tiny_classifier(len(dataset.classes)), filtered, steps=10)
    c = ood_filter.counters
    print(f"trained 10 steps; filter saw {c.seen} samples, kept {c.kept}, dropped {c.dropped}; loss {loss:.3f}")


if __name__ == "__main__":
    main()
