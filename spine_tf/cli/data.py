"""``spine-tf phantom`` and ``spine-tf build-data``: a phantom cohort, the TFDS dataset."""

import time

from spine_tf.cli.options import add_detector
from spine_tf.detection import dataset_detector
from spine_tf.errors import UsageError

BUILD_CONFIGS = ("phantom_small", "phantom", "phantom_large", "folder", "spider",
                 "spider_slices")
SOURCE_CONFIGS = ("folder", "spider", "spider_slices")


def add_parsers(commands):
    ph = commands.add_parser("phantom", help="write a phantom cohort",
                             description="Writes synthetic T2 sagittal lumbar scans with masks, "
                             "lesion masks, landmarks and labels (the folder layout).")
    ph.add_argument("--patients", type=int, required=True)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--out", required=True, help="output folder")
    ph.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ph.add_argument("--reader-noise", type=float, default=1.0,
                    help="reading noise of both label sets; 0 = readers agree (default: 1)")
    ph.add_argument("--missing-fraction", type=float, default=0.04)
    ph.add_argument("--cutoff-fraction", type=float, default=0.12)
    ph.set_defaults(run=_phantom)

    build = commands.add_parser("build-data", help="build the spine_discs TFDS dataset",
                                description="Builds spine_discs (TFDS). Configs: phantom_small, "
                                "phantom, phantom_large, folder, spider, spider_slices; "
                                "--patients makes a phantom cohort of any size.")
    build.add_argument("--config", default="phantom_small", choices=BUILD_CONFIGS)
    build.add_argument("--patients", type=int, help="phantom cohort of this size instead")
    build.add_argument("--seed", type=int, default=0, help="phantom seed (with --patients)")
    build.add_argument("--manual-dir",
                       help="source folder for the folder, spider and spider_slices configs")
    build.add_argument("--data-dir", default=None,
                       help="TFDS data dir (default: TFDS's; for a --manual-dir, a folder "
                       "in it named after that folder and its files)")
    build.add_argument("--workers", type=int, default=None)
    build.add_argument("--strict", action="store_true",
                       help="stop at the first unusable scan instead of skipping it")
    add_detector(build)
    build.add_argument("--no-detector", action="store_true",
                       help="spider_slices: only the images whose boxes place their discs")
    build.set_defaults(run=_build_data)


def _phantom(args):
    from spine_tf.phantom import PhantomConfig, write_cohort
    config = PhantomConfig(reader_noise=args.reader_noise, missing_fraction=args.missing_fraction,
                           cutoff_fraction=args.cutoff_fraction)
    start = time.perf_counter()
    labels = write_cohort(args.out, args.patients, seed=args.seed, config=config,
                          workers=args.workers, progress=True)
    seconds = time.perf_counter() - start
    print(f"wrote {args.patients} patients to {args.out} in {seconds:.1f} s; labels: {labels}")


def _build_data(args):
    if args.patients and not args.config.startswith("phantom"):
        raise UsageError(f"--patients makes a phantom cohort; it does not apply to --config "
                         f"{args.config}")
    from spine_tf.data import spine_discs
    config = spine_discs.phantom_config(args.patients, args.seed) if args.patients \
        else args.config
    source = config.source if args.patients else args.config
    if source in SOURCE_CONFIGS and not args.manual_dir:
        raise UsageError(f"--manual-dir is needed for {source}")
    from spine_tf.config import DataConfig
    from spine_tf.training.train import data_dir_of
    data_dir = data_dir_of(DataConfig(data_dir=args.data_dir, manual_dir=args.manual_dir))
    builder = spine_discs.builder(
        config, data_dir=data_dir, workers=args.workers, strict=args.strict,
        detect=dataset_detector(source, args.detector, use=not args.no_detector))
    builder.download_and_prepare(download_config=download_config(args.manual_dir))
    print_build(builder)
    return 0


def download_config(manual_dir):
    """TFDS's download config for a source folder (None: none given)."""
    import tensorflow_datasets as tfds
    return tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None


def print_build(builder):
    """A built dataset's splits, skipped scans and count of skipped discs."""
    from spine_tf.data.spine_discs import REPORT_NAME
    print(f"dataset: {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split:<11} {info.num_examples:>6} discs")
    try:
        content = builder.build_report()
    except FileNotFoundError:
        return
    for source, count in content.get("examples_by_position", {}).items():
        print(f"  {count:>6} discs placed from {source}")
    for item in content.get("skipped_scans", []):
        print(f"  skipped scan {item.get('patient')}: {item.get('reason')}")
    skipped = content.get("skipped_discs", [])
    if skipped:
        print(f"  {len(skipped)} labelled discs skipped (see {builder.data_dir}/{REPORT_NAME})")
