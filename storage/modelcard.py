"""The description a shared generator folder carries: its config.json and its model card.

The card's score table shows the measures it is handed (export.py hands it metrics/measures.py's
table: storage/ never imports metrics/), each with its title, format, which way is better and what
it means.
"""

# The flags that say how a generator was trained (the recipe), as config.json records them.
RECIPE_FLAGS = ('dataset', 'batch_size', 'max_epoch', 'smoothing', 'l1_weight', 'base_lr_gen', 'base_lr_disc',
                'lr_decay_rate', 'lr_decay_steps', 'disc_norm', 'apply_weight_init', 'ema_decay', 'precision')


def folder_config(generator_config, run_args, ckpt):
    """config.json: what builds the generator, and how and from what it was trained."""
    return {
        'library': 'colorization-gan',
        'architecture': dict(generator_config),
        'training': {flag: run_args[flag] for flag in RECIPE_FLAGS if flag in run_args},
        'epoch': ckpt.get('epoch'), 'step': ckpt.get('step'), 'seed': run_args.get('seed', 0),
        'exact_statistics': ckpt.get('generator_exact_statistics', True),
        'provenance': ckpt.get('provenance'),
        # the run's configs as its files recorded them (a previous release's: none)
        **{key: ckpt[key] for key in ('model_config', 'train_config') if isinstance(ckpt.get(key), dict)},
        **({'decoding': {k: run_args['decoding'].get(k) for k in ('temperature', 'blend', 'source', 'rule')}}
           if isinstance(run_args.get('decoding'), dict) else {}),
    }


def _yaml_list(items):
    return ''.join(f"\n- {item}" for item in items)


def model_card(config, metrics=None, measures=()):
    """README.md of a model folder: a YAML metadata header, then what the model is, how it was
    trained, how well it scores (from a test.py metrics.json, where one is given, in `measures`:
    metrics/measures.py's Measure records), its limits, and the commands that use it."""
    arch, recipe = config['architecture'], config['training']
    dataset = recipe.get('dataset', 'cifar10')
    dataset_name = 'CIFAR-10' if dataset == 'cifar10' else 'a folder of photographs'
    size = arch['image_size']
    header = (f"---\nlibrary_name: colorization-gan\npipeline_tag: image-to-image\n"
              f"tags:{_yaml_list(['image-colorization', 'gan', 'pytorch', 'safetensors'])}\n"
              f"datasets:{_yaml_list([dataset])}\n---\n")
    network = ("the reference's 32x32 U-Net" if arch['network'] == 'reference'
               else f"Nazeri et al.'s {size}x{size} U-Net (descending to 2x2)")
    trained = ', '.join(f"`--{k} {v}`" for k, v in recipe.items()) or 'not recorded'
    lines = [header, f"# Colorization GAN generator ({size}x{size}, {dataset_name})", '',
             "## What it is", '',
             f"The generator of a colorization GAN after Nazeri et al. (2018), \"Image Colorization with Generative "
             f"Adversarial Networks\": {network} with {arch['gen_norm']} normalization, which predicts the a and b "
             f"channels of Lab from the lightness L. Weights: `model.safetensors`; how to build it: `config.json`.", '',
             "## Training", '',
             f"Trained on {dataset_name} at {size}x{size} pixels, epoch {config.get('epoch')}, step "
             f"{config.get('step')}, seed {config.get('seed')}, with {trained}.", '',
             "## Scores", '']
    lines += _scores(metrics, measures)
    limits = ("It was trained on 32x32 CIFAR-10 thumbnails: it colours thumbnails of CIFAR-10's ten classes, and a "
              "photograph only through a 32x32 prediction scaled up." if arch['network'] == 'reference' else
              f"It was trained at {size}x{size} on {dataset_name}; pictures unlike its training images get "
              f"uncertain, often washed-out colours.")
    lines += ['', "## Limits", '', limits + " A GAN's colours are plausible, not true: do not use them as evidence "
              "of an object's real colour.", '',
              "## Use", '', "```",
              "python colorize.py --checkpoint THIS_FOLDER photos/ --output colorized/",
              "python test.py --checkpoints THIS_FOLDER" + ('' if dataset == 'cifar10' else
                                                           ' --dataset folder --data_path ROOT'),
              "```", '']
    return '\n'.join(lines)


def _scores(metrics, measures):
    if not metrics:
        return ["Not scored: export with `--metrics out/metrics.json` from `python test.py` to record them here."]
    if not measures:
        raise ValueError("a card's scores need the table of measures (metrics/measures.py)")
    label, scores = next(iter(metrics['checkpoints'].items()))
    baseline = metrics.get('baseline', {})
    shown = [m for m in measures if m.key in scores]
    rows = ["| measure | this model | no colour (ab = 0) |", "|---|---|---|"]
    for m in shown:
        rows.append(f"| {m.title} ({m.which_way}) | {m.text(scores[m.key])} | "
                    f"{m.text(baseline[m.key]) if m.key in baseline else ''} |")
    return ([f"On {metrics.get('images', '?')} {'CIFAR-10 test' if metrics.get('dataset', 'cifar10') == 'cifar10' else 'validation'} "
             f"images (test.py, precision {metrics.get('precision', '?')}; the truth's colorfulness is "
             f"{metrics.get('truth_colorfulness', float('nan')):.2f}):", ''] + rows + ['']
            + [f"- {m.title}: {m.meaning}" for m in shown])
