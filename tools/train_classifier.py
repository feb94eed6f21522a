"""Train the scoring classifier (classifier.py) on CIFAR-10's colour training images only, and
write it with how it was made (command, seed, time, CPU, test accuracy) as one safetensors file.

    python tools/train_classifier.py --data_path ../shared/data            # -> weights/cifar10_classifier.safetensors

The recipe is the usual fast one for CIFAR-10 (airbench, ResNet-9 lines): SGD with Nesterov
momentum, a linear warm-up and decay of the learning rate, label smoothing 0.2, weight decay
on the convolutions and the linear layer only, random translations of up to 2 pixels and
left-right flips. The whole training set sits in memory as one tensor; each epoch draws its
order and augmentation from a generator seeded by --seed. The test set is read only once, at
the end, to measure the accuracy that goes into the file.
"""
import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metrics import classifier  # noqa: E402
import dataset  # noqa: E402
from core.cli import Compute, OneLineArgumentParser, add_compute_flags, cpu_description, number_in, run_cli  # noqa: E402


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='tools/train_classifier.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--data_path', default='./data', help='the folder holding cifar-10-batches-py/ (default: ./data)')
    p.add_argument('--out', default=classifier.DEFAULT_PATH, help='the safetensors file to write '
                                                                  '(default: weights/cifar10_classifier.safetensors)')
    p.add_argument('--epochs', type=number_in(int, 1), default=10, help='(default: 10)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=256, help='(default: 256)')
    p.add_argument('--lr', type=number_in(float, 0, low_open=True), default=0.2, help='peak learning rate (default: 0.2)')
    p.add_argument('--weight_decay', type=number_in(float, 0), default=5e-4, help='(default: 5e-4)')
    p.add_argument('--seed', type=int, default=0, help='(default: 0)')
    add_compute_flags(p)
    return p.parse_args(argv)


def learning_rate(peak, step, total, warmup=0.2):
    """Linear from peak/10 up to the peak over the first `warmup` of the steps, then linear to 0."""
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * (0.1 + 0.9 * step / rise)
    return peak * max(0.0, (total - step) / (total - rise))


def load_rgb(data_path, train):
    folder = dataset.find_cifar_folder(data_path)
    parts = [dataset.read_batch_file(os.path.join(folder, name))
             for name in (dataset.TRAIN_FILES if train else dataset.TEST_FILES)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main(argv=None):
    args = parse_args(argv)
    compute = Compute.from_flags(args)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rgb, labels = load_rgb(args.data_path, train=True)
    images = classifier.rgb_batch(rgb, compute.device)
    targets = torch.from_numpy(labels).to(compute.device)

    model = classifier.CifarClassifier().to(compute.device, memory_format=torch.channels_last)
    decayed = [p for p in model.parameters() if p.dim() > 1]
    others = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD([{'params': decayed, 'weight_decay': args.weight_decay},
                                 {'params': others, 'weight_decay': 0.0}], lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(images) // args.batch_size  # the last partial batch is dropped: batch norm wants full ones
    total = args.epochs * steps_per_epoch
    started, step = time.time(), 0
    print(f"training the scoring classifier ({sum(p.numel() for p in model.parameters()):,} parameters) for "
          f"{args.epochs} epochs on {len(images):,} images; device {compute.device}, precision {compute.precision}, "
          f"{cpu_description()}")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator).to(compute.device)
        loss_sum, correct = torch.zeros((), device=compute.device), torch.zeros((), device=compute.device)
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch}', dynamic_ncols=True, leave=False)
        for b in bar:
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            x = classifier.translate_and_flip(images[idx], generator)
            for group in optimizer.param_groups:
                group['lr'] = learning_rate(args.lr, step, total)
            with compute.autocast:
                logits = model(x)
                loss = F.cross_entropy(logits.float(), targets[idx], label_smoothing=0.2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == targets[idx]).sum()
        seen = steps_per_epoch * args.batch_size
        print(f"epoch {epoch}: loss {loss_sum.item() / steps_per_epoch:.4f}, training top-1 "
              f"{100 * correct.item() / seen:.2f}%, {time.time() - started:.0f} s")

    model.eval()
    test_rgb, test_labels = load_rgb(args.data_path, train=False)
    accuracy = classifier.top1(model, test_rgb, test_labels)
    minutes = (time.time() - started) / 60
    command = 'python tools/train_classifier.py ' + ' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    classifier.save_classifier(args.out, model, {
        'command': command, 'seed': args.seed, 'epochs': args.epochs, 'test_top1': f'{accuracy:.4f}',
        'train_minutes': f'{minutes:.1f}', 'device': str(compute.device), 'precision': compute.precision,
        'cpu': cpu_description(), 'torch': torch.__version__, 'trained_on': 'CIFAR-10 training images (50,000), colour',
        'date': time.strftime('%Y-%m-%d')})
    print(f"test top-1 {100 * accuracy:.2f}% on the {len(test_rgb):,} colour test images after {minutes:.1f} min; wrote {args.out}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
