"""The naive baseline: fine-tuning written the way PyTorch's transfer-learning tutorial does it
(torchvision ImageFolder + transforms, a DataLoader, a plain loop; model.train() for every layer, no
channels_last, no cache), with the same model, batch size and threads as tunecv.

    python -m bench.naive --data_dir ../shared/data/hymenoptera_data --epochs 4

prints one JSON line per epoch: {"epoch", "top1", "elapsed_s"} (elapsed since --t0, a time.time() stamp).
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN = STD = (0.5, 0.5, 0.5)  # tf_efficientnet_lite0's normalisation


def tutorial_transforms(size: int, is_training: bool) -> transforms.Compose:
    if is_training:
        steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size)]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def tutorial_loader(data_dir: str, split: str, size: int, batch_size: int, workers: int) -> DataLoader:
    dataset = datasets.ImageFolder(f"{data_dir}/{split}", tutorial_transforms(size, split == "train"))
    return DataLoader(dataset, batch_size=batch_size, shuffle=split == "train", num_workers=workers)


def tutorial_model(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    model = timm.create_model(name, num_classes=num_classes)
    if pretrained:  # the offline ImageNet weights tunecv bundles; the tutorial downloads its own
        from tunecv.config.schema import ModelConfig
        from tunecv.models.weights import load_initial_weights

        load_initial_weights(model, ModelConfig(model=name, pretrained=True))
    return model


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as the tutorial picks it


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
               inputs: torch.Tensor, labels: torch.Tensor) -> None:
    inputs, labels = inputs.to(DEVICE), labels.to(DEVICE)
    optimizer.zero_grad()
    loss = criterion(model(inputs), labels)
    loss.backward()
    optimizer.step()


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in loader:
            correct += (model(inputs.to(DEVICE)).argmax(1).cpu() == labels).sum().item()
            total += len(labels)
    return 100.0 * correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=4)  # the tutorial's
    parser.add_argument("--workers", type=int, default=4)  # the tutorial's
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t0", type=float, default=None)
    args = parser.parse_args()
    t0 = args.t0 or time.time()
    torch.manual_seed(args.seed)
    train = tutorial_loader(args.data_dir, "train", args.image_size, args.batch_size, args.workers)
    val = tutorial_loader(args.data_dir, "val", args.image_size, args.batch_size, args.workers)
    model = tutorial_model(args.model, len(train.dataset.classes), pretrained=True).to(DEVICE)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for inputs, labels in train:
            train_step(model, optimizer, criterion, inputs, labels)
        scheduler.step()
        print(json.dumps({"epoch": epoch, "top1": round(accuracy(model, val), 2),
                          "elapsed_s": round(time.time() - t0, 2)}), flush=True)


if __name__ == "__main__":
    main()
