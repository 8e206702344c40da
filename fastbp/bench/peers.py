"""The peers fastbp's benchmarks compare against, built the same way in every table."""
import itertools


def torch_mlp(sizes, device="cpu"):
    """The benchmarks' PyTorch side: (nn.Sequential of Linear with ReLU between, SGD with
    lr 0.01 and momentum 0.9, CrossEntropyLoss), on ``device``."""
    import torch
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    return (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            torch.nn.CrossEntropyLoss())
