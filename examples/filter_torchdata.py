"""torchdata.nodes: an OOD filter node in a checkpointable pipeline (needs the torchdata extra).

Run: python examples/filter_torchdata.py   (uses ../shared/data and the tiny test model)
"""

from __future__ import annotations

import torchdata.nodes as nodes
from _data import CLASSES, TEXTURES, require_data, tiny_classifier, train_steps
from torch.utils.data import RandomSampler, default_collate
from torchvision import transforms
from torchvision.datasets import ImageFolder

from oodfilter.pipeline import OODFilter
from oodfilter.pipeline.nodes import OODFilterNode


def main() -> None:
    require_data()
    dataset = ImageFolder(str(TEXTURES), transform=transforms.Compose([transforms.Resize((64, 64)),
                                                                      transforms.ToTensor()]))
    ood_filter = OODFilter("test-tiny", CLASSES, method="msp", threshold=0.28, mode="drop")
    dataset.transform = ood_filter.wrap_transform(dataset.transform)

    node = nodes.SamplerWrapper(RandomSampler(dataset))  # indices
    # Decoding in the loop's thread keeps the example simple; nodes.ParallelMapper(method="process") decodes in
    # parallel (its threads must be shut down before the interpreter exits, so not here).
    node = nodes.Mapper(node, map_fn=dataset.__getitem__)
    node = nodes.Batcher(node, batch_size=32)
    node = nodes.Mapper(node, default_collate)
    loader = nodes.Loader(OODFilterNode(node, ood_filter))

    model = tiny_classifier(len(dataset.classes))
    batches = iter(loader)
    train_steps(model, batches, steps=5)
    checkpoint = loader.state_dict()  # the sampler position and the filter's counters, for an exact resume
    loss = train_steps(model, batches, steps=5)
    print(f"10 steps; counters {vars(ood_filter.counters)}; checkpoint keys {sorted(checkpoint)}; loss {loss:.3f}")


if __name__ == "__main__":
    main()
