"""The one evaluation of colorizations: train.py's validation, the choice of a decoding on held-out
images (metrics/decoding.py) and test.py score through it, so that they cannot drift apart.

An `Evaluation` gathers, batch by batch, several colorizations of the same images (named sets):
the per-pixel measures and colourfulness of each (scores.ColorizationScores), overall and per
class where asked, and, where a classifier judges (classifier.ClassifierScores), its semantic
accuracy and classifier FD against the true colours.
"""
import numpy as np
import torch

from metrics.scores import ColorizationScores


class Evaluation:
    """`class_names`: the images' classes by index (per class: their scores apart); `judge`: a
    classifier.ClassifierScores, or None; `judge_truth`: whether the judge is shown the true
    colours here (False where it has seen them before, under its truth's name)."""

    def __init__(self, class_names=(), judge=None, per_class=False, judge_truth=True):
        self.class_names = list(class_names)
        self.judge = judge
        self.per_class = per_class
        self.judge_truth = judge is not None and judge_truth
        self.scores = {}
        self.class_scores = {}

    def add(self, lab, truth_rgb, classes, colorizations):
        """One batch: `lab` the true network-scale Lab (N, 3, H, W), `truth_rgb` its uint8 RGB
        (N, H, W, 3), `classes` the images' class indices (numpy, -1: none), `colorizations`
        {name: (ab, rgb)}, each a network-scale ab tensor and its uint8 RGB."""
        ab = lab[:, 1:]
        classes = np.asarray(classes)
        groups = []
        if self.per_class:
            # (class name, members as a numpy mask for pictures, as a tensor mask for ab), once per batch
            groups = [(self.class_names[c], classes == c, torch.from_numpy(classes == c).to(lab.device))
                      for c in np.unique(classes) if c >= 0]
        if self.judge_truth:
            self.judge.add(self.judge.truth, truth_rgb, classes)
        for name, (fake_ab, rgb) in colorizations.items():
            self.scores.setdefault(name, ColorizationScores()).add(fake_ab, ab, rgb, truth_rgb)
            by_class = self.class_scores.setdefault(name, {})
            for class_name, members, picked in groups:
                by_class.setdefault(class_name, ColorizationScores()).add(
                    fake_ab[picked], ab[picked], rgb[members], truth_rgb[members])
            if self.judge is not None:
                self.judge.add(name, rgb, classes)

    def result(self, name):
        """The set's scores overall: ColorizationScores' means, and the judge's where it judged."""
        found = self.scores[name].result()
        if self.judge is not None:
            found.update(self.judge.result(name)[0])
        return found

    def results(self):
        """({name: scores overall}, {name: {class name: scores}}) of every set."""
        overall = {name: self.result(name) for name in self.scores}
        per_class = {name: {c: s.result() for c, s in by_class.items() if s.images}
                     for name, by_class in self.class_scores.items()}
        if self.judge is not None:
            for name in per_class:
                for c, judged in self.judge.result(name)[1].items():
                    if self.class_names[c] in per_class[name]:
                        per_class[name][self.class_names[c]].update(judged)
        return overall, per_class

    def truth_results(self):
        """The true colours' own row: colourfulness (gap 0) and, where judged, the judge's
        scores, overall and per class."""
        first = next(iter(self.scores.values()))
        overall = {'colorfulness': first.result()['truth_colorfulness'], 'colorfulness_gap': 0.0,
                   'images': first.images}
        per_class = {c: {'colorfulness': s.result()['truth_colorfulness'], 'colorfulness_gap': 0.0}
                     for c, s in next(iter(self.class_scores.values()), {}).items() if s.images}
        if self.judge is not None and self.judge.truth in self.judge.features:
            judged, judged_by_class = self.judge.result(self.judge.truth)
            overall.update(judged)
            for c, scores in judged_by_class.items():
                if self.class_names and self.class_names[c] in per_class:
                    per_class[self.class_names[c]].update(scores)
        return overall, per_class

    def forget(self, name):
        """Drop a set (and what the judge kept of it), so that a later pass takes its name afresh."""
        self.scores.pop(name, None)
        self.class_scores.pop(name, None)
        if self.judge is not None:
            self.judge.forget(name)
