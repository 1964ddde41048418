"""Distributed PyTorch MNIST training with Ray Train."""
import os

import ray.train.torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer


def train_func():
    import torch
    from torchvision import datasets, transforms

    model = ray.train.torch.prepare_model(torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(28 * 28, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)))
    data = datasets.MNIST("/tmp/mnist", train=True, download=True, transform=transforms.ToTensor())
    loader = ray.train.torch.prepare_data_loader(torch.utils.data.DataLoader(data, batch_size=128, shuffle=True))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(2):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        ray.train.report({"epoch": epoch, "loss": loss.item()})


trainer = TorchTrainer(
    train_func,
    scaling_config=ScalingConfig(
        num_workers=int(os.environ.get("NUM_WORKERS", "2")),
        resources_per_worker={"CPU": int(os.environ.get("CPUS_PER_WORKER", "1"))},
    ),
)
print(trainer.fit().metrics)
