"""Choose how a colour-distribution generator decodes (its temperature, and its blend where it has
both heads) on images its run kept out of training, never on the test set: the settings tried,
their scores (metrics/evaluation.py, as test.py scores) and the rule, which train.py applies at
each epoch's end and tools/choose_decoding.py applies to any generator file.

The rule: of the settings whose colourfulness gap (ΔCF) is at most MAX_GAP, the one with the
highest semantic accuracy, then the lowest classifier FD, then the lowest mean |ab error|; where
none comes that close, or where no scoring classifier judges the images (a folder of photographs),
the one with the smallest gap.
"""
import torch

import models
from core import pictures
from metrics.evaluation import Evaluation

TEMPERATURES = (0.1, 0.2, 0.3, 0.38, 0.5, 0.7, 1.0)
BLENDS = (0.25, 0.5, 0.75)  # `both`: the regression's share, beside the one it trained with
MAX_GAP = 3.0  # the colourfulness gap a setting may leave: the goal the field's ΔCF sets (issue 39)


def setting_name(temperature, blend):
    return f'T{temperature:g}' + ('' if blend is None else f'_W{blend:g}')


def settings_of(G, temperatures=TEMPERATURES, blends=None):
    """[(temperature, blend)] to try for generator G: every temperature, and for a generator with
    both heads every blend (BLENDS and the one it has, where `blends` is None); blend None for
    one head alone."""
    head = G.final
    if getattr(head, 'regression', None) is None:
        return [(float(t), None) for t in temperatures]
    blends = sorted(set(BLENDS) | {round(float(head.blend), 6)}) if blends is None else blends
    return [(float(t), float(w)) for t in temperatures for w in blends]


def choose(settings, max_gap=MAX_GAP, judged=True):
    """The setting the rule picks (see the module's docstring) and why, in words. `settings`:
    dicts of scores with at least colorfulness_gap and mean_ab_error; `judged`: whether a
    scoring classifier judged them."""
    if not judged:
        return min(settings, key=lambda s: s['colorfulness_gap']), "no scoring classifier: the smallest ΔCF"
    close = [s for s in settings if s['colorfulness_gap'] <= max_gap]
    if not close:
        return min(settings, key=lambda s: s['colorfulness_gap']), f"no setting within ΔCF {max_gap:g}: the smallest gap"

    def rank(s):
        return (-s.get('semantic_accuracy', 0.0), s.get('classifier_fd', 0.0), s['mean_ab_error'])
    return min(close, key=rank), (f"{len(close)} of {len(settings)} settings within ΔCF {max_gap:g}: the highest "
                                  f"semantic accuracy, then the lowest classifier FD, then the lowest error")


@torch.no_grad()
def score_settings(G, images, settings, device, autocast, judge=None, batch_size=256):
    """Each setting's scores of G's colorizations of `images` (a data set with `batches`, its
    labels and class names): G runs once per batch, and each setting decodes its logits. `judge`:
    a classifier.ClassifierScores for these images, or None. Returns [dict(scores, temperature,
    blend)] in the order of `settings`."""
    head = G.final
    evaluation = Evaluation(images.class_names, judge, judge_truth=judge is not None and judge.truth not in judge.features)
    for idx, lab, truth in images.batches(batch_size, device=device, with_rgb=True):
        L = lab[:, :1]
        colorizations = {}
        with autocast:  # the decoding as G's own forward runs it, in the run's precision
            _, logits, regressed, *_ = G(L, with_logits=True)
            decoded = [head.decode(logits, regressed, torch.tensor(temperature),
                                   None if blend is None else torch.tensor(blend)).float() for temperature, blend in settings]
        for (temperature, blend), ab in zip(settings, decoded):
            colorizations[setting_name(temperature, blend)] = ab, pictures.network_to_rgb(L, ab)
        evaluation.add(lab, truth, images.labels[idx.numpy()], colorizations)
    scored = []
    for temperature, blend in settings:
        name = setting_name(temperature, blend)
        scored.append(dict(evaluation.result(name), temperature=temperature, blend=blend))
        evaluation.forget(name)
    return scored


def choose_decoding(G, images, device, autocast, judge=None, settings=None, max_gap=MAX_GAP):
    """Score G's settings on the held-out `images` and pick one by the rule: (the chosen setting's
    scores, why, every setting's scores). G is left decoding as it was."""
    settings = settings or settings_of(G)
    scored = score_settings(G, images, settings, device, autocast, judge)
    chosen, why = choose(scored, max_gap, judged=judge is not None)
    return chosen, why, scored


def record(chosen, why, scored, where):
    """What a checkpoint and a generator file keep of a choice: the setting, where and how it was
    chosen, and every setting's scores (a plain, JSON-able dict)."""
    keep = ('colorfulness', 'colorfulness_gap', 'mean_ab_error', 'semantic_accuracy', 'classifier_fd')
    def plain(value):  # numpy's floats would not load back from a checkpoint with weights_only
        return None if value is None else float(value)
    return {'temperature': plain(chosen['temperature']), 'blend': plain(chosen['blend']),
            'source': f"chosen on {where}", 'rule': why,
            'settings': [{k: plain(s[k]) for k in ('temperature', 'blend') + keep if k in s} for s in scored]}


def apply(G, decoding):
    """Set G to decode as `decoding` (a record, or {'temperature', 'blend'}) says."""
    models.set_decoding(G, decoding.get('temperature'), decoding.get('blend'))


def in_use(G, run_args, temperature=None, blend=None):
    """Set G to decode at the flags' `temperature` and `blend` where given, else as its file
    says (the run's choice on held-out images, or what it trained with); returns how it decodes
    and where that came from, {'temperature', 'blend', 'source'}, or None for the reference's
    regression head, which has nothing to decode."""
    head = G.final
    if not isinstance(head, models.ColourDistributionHead):
        return None
    both = head.regression is not None
    models.set_decoding(G, temperature, blend if both else None)
    flags = [f'--{name}' for name, value in (('temperature', temperature), ('blend', blend if both else None))
             if value is not None]
    chosen = run_args.get('decoding') if isinstance(run_args.get('decoding'), dict) else None
    if flags:
        source = f"{' and '.join(flags)} on the command line" + (f" (its run's choice: {describe(chosen)})"
                                                                  if chosen else '')
    elif chosen:
        source = chosen.get('source', 'its run\'s choice')
    else:
        source = "the temperature it trained with (its run chose none: train.py --holdout N chooses one)"
    return {'temperature': round(float(head.temperature), 6), 'blend': round(float(head.blend), 6) if both else None,
            'source': source}


def describe(decoding):
    """'temperature 0.2' or 'temperature 0.2, blend 0.5'."""
    return f"temperature {decoding['temperature']:g}" + (
        '' if decoding.get('blend') is None else f", blend {decoding['blend']:g}")
