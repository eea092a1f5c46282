"""torchdata.nodes: an OOD filter node in a checkpointable pipeline (needs the torchdata extra).

Run: python examples/filter_torchdata.py   (uses ../shared/data and the tiny test model)
"""

from __future__ import annotations

import torch
import torchdata.nodes as nodes
from _data import CLASSES, TEXTURES, require_data, tiny_classifier
from torch.utils.data import RandomSampler, default_collate
from torchvision import transforms
from torchvision.datasets import ImageFolder

from oodfilter.pipeline import OODFilter
from oodfilter.pipeline.nodes import OODFilterNode


def main() -> None:
    require_data()
    dataset = ImageFolder(str(TEXTURES), transform=transforms.Compose([transforms.Resize((64, 64)),
                                                                      transforms.ToTensor()]))
    ood_filter = OODFilter("test-tiny", CLASSES, method="msp", threshold=0.80, mode="drop")
    dataset.transform = ood_filter.wrap_transform(dataset.transform)

    node = nodes.MapStyleWrapper(map_dataset=dataset, sampler=RandomSampler(dataset))
    node = nodes.ParallelMapper(node, map_fn=lambda sample: sample, num_workers=2, method="thread")
    node = nodes.Batcher(node, batch_size=32)
    node = nodes.Mapper(node, default_collate)
    loader = nodes.Loader(OODFilterNode(node, ood_filter))

    model = tiny_classifier(len(dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint = None
    for step, (images, labels) in enumerate(loader):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 4:
            checkpoint = loader.state_dict()  # saves the sampler position and the filter's counters
        if step == 9:
            break
    print(f"10 steps; counters {vars(ood_filter.counters)}; checkpoint keys {sorted(checkpoint or {})}")


if __name__ == "__main__":
    main()
