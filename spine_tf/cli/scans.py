"""``spine-tf extract``, ``hotspots`` and ``predict``: from scans to disc volumes, their
evidence hotspots, and grades with a report. A scan goes through ``app.scans.extract_scan``."""

import os

from spine_tf import tasks
from spine_tf.cli.options import (add_detector, add_scan_inputs, at_least_one,
                                  load_detector)
from spine_tf.errors import UsageError
from spine_tf.training import rundir
from spine_tf.training.rundir import RunDir


def add_parsers(commands):
    ex = commands.add_parser("extract", help="extract the disc volumes of one scan",
                             description="Reads a scan, localises its discs from a label mask "
                             "or a landmarks file (else with the disc detector), and writes the "
                             "disc volumes (npz) and a montage (PNG).")
    ex.add_argument("scan", help="NIfTI / .mha / DICOM folder / 2D image")
    _add_localisation(ex)
    ex.add_argument("--out", default=".", help="output folder (default: current)")
    _add_spacing(ex)
    ex.set_defaults(run=_extract)

    hs = commands.add_parser(
        "hotspots", help="evidence hotspots of a scan or a dataset split",
        description="Augmented saliency hotspots (spine_tf.hotspots). With a SCAN (and --mask, "
        "--landmarks or the disc detector): its discs' hotspots as arrays (npz), PNG montages "
        "and one 4D NIfTI in the scan's own grid. Without: the discs of a run's dataset split "
        "(--run-dir). "
        "--measure: the localisation table (IoU with the lesion boxes) of a run instead.")
    hs.add_argument("scan", nargs="?", help="NIfTI / .mha / DICOM folder / 2D image")
    _add_localisation(hs, what="of the scan")
    hs.add_argument("--run-dir", help="a spine-tf train run (its model, data and splits)")
    hs.add_argument("--model", help="a .keras model file (default: RUN_DIR/best.keras)")
    hs.add_argument("--split", help="dataset split (default: the run's test split)")
    hs.add_argument("--discs", type=int, default=8,
                    help="discs of the split to explain (default: %(default)s)")
    hs.add_argument("--tasks", nargs="+", metavar="TASK",
                    help="tasks to explain (default: all the model grades)")
    hs.add_argument("--augmentations", type=int, default=150,  # hotspots.AUGMENTATIONS
                    help="augmented copies per hotspot (default: %(default)s)")
    hs.add_argument("--seed", type=int, default=0)
    hs.add_argument("--measure", action="store_true",
                    help="localisation IoU table of the run's split (all its lesion discs, or "
                    "--discs of them) instead of pictures")
    hs.add_argument("--out", help="output folder (default: current, or RUN_DIR/hotspots_SPLIT)")
    _add_spacing(hs)
    hs.set_defaults(run=_hotspots)

    pr = commands.add_parser("predict", help="grade scans: grades, hotspots, HTML report",
                             description="Grades the discs of scans (files or folders) with a "
                             "model (.keras, run directory or SavedModel) and writes per-disc "
                             "grades (JSON, CSV), hotspot NIfTI overlays in each scan's grid, "
                             "PNG montages and an HTML report per scan. Discs are found from "
                             "a label mask or landmarks file per scan. With --dicomweb the "
                             "studies come from a PACS instead (docs/dicomweb.md).")
    add_scan_inputs(pr, optional=True)
    pr.add_argument("--model", default="shipped",
                    help="a .keras model, a run directory, a SavedModel, a model base folder "
                    "(its newest version), or 'shipped': the package's model of real discs "
                    "(the default; spine_tf/modeling/weights/README.md)")
    pr.add_argument("--out", required=True, help="output folder")
    _add_series(pr)
    pr.add_argument("--no-tta", action="store_true", help="single view instead of 54 views")
    pr.add_argument("--no-hotspots", action="store_true", help="grades only")
    pr.add_argument("--augmentations", type=int, default=150,
                    help="augmented copies per hotspot (default: %(default)s)")
    pr.add_argument("--seed", type=int, default=0, help="hotspot augmentation seed")
    add_detector(pr)
    pacs = pr.add_argument_group(
        "PACS (DICOMweb)", "grade studies of a DICOMweb server instead of SCAN_OR_FOLDER: each "
        "study's sagittal T2 series (or --series) is fetched with QIDO-RS/WADO-RS to "
        "OUT/.dicomweb/STUDY_UID/ (kept; a rerun fetches again) and graded into "
        "OUT/STUDY_UID/; the disc detector finds the discs. Credentials from the environment: "
        "SPINE_TF_DICOMWEB_TOKEN, or SPINE_TF_DICOMWEB_USER and SPINE_TF_DICOMWEB_PASSWORD")
    pacs.add_argument("--dicomweb", metavar="URL",
                      help="the DICOMweb root, e.g. http://pacs:8042/dicom-web (Orthanc)")
    pacs.add_argument("--study", action="append", metavar="STUDY_UID",
                      help="a StudyInstanceUID to grade (repeat for several; a study that "
                      "fails is recorded and the others are still graded)")
    pacs.add_argument("--store", action="store_true",
                      help="store each graded study's DICOM results (OUT/STUDY_UID/dicom/"
                      "*.dcm) back with STOW-RS, the structured report last; exit status 1 if "
                      "any store fails")
    pr.set_defaults(run=_predict)


def _add_localisation(parser, what=None):
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--mask", help=f"label mask {what}" if what else
                        "label mask (SPIDER convention, or 1 disc / 2 body)")
    source.add_argument("--landmarks", help=f"landmarks JSON {what}" if what else
                        "landmarks JSON (spine_tf.landmarks)")
    add_detector(parser)


def _add_spacing(parser):
    parser.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                        help="pixel spacing of a 2D image (default: 1 mm)")
    _add_series(parser)


def _add_series(parser):
    parser.add_argument("--series", metavar="NUMBER|UID|DESCRIPTION",
                        help="for a DICOM study: the series to read (default: its one "
                        "sagittal T2 series; spine_tf/io/dicom.py says how it is recognised)")


def _scan_discs(args):
    """(scan, DiscVolumes) of ``args.scan`` (``app.scans.extract_scan``); prints the discs
    skipped, the detector's notes and the discs it found with less than full confidence."""
    from spine_tf.app import scans
    from spine_tf.io.scan import scan_name
    job = scans.ScanJob(scan_name(args.scan), args.scan, mask=args.mask,
                        landmarks=args.landmarks,
                        spacing_mm=(1.0, *args.spacing) if args.spacing else None,
                        series=args.series)
    detector = load_detector(args.detector, needed=not (args.mask or args.landmarks))
    scan, located, volumes, skipped = scans.extract_scan(job, detector)
    if scan.series:
        print(f"  series {scan.series['number']} {scan.series['description']!r}: "
              f"{scan.series['why']}")
    for level, reason in skipped:
        print(f"  {level}: skipped: {reason}")
    for note in located.notes:
        print(f"  detector: {note}")
    for volume in volumes:
        if volume.confidence < 1.0:
            print(f"  {volume.level}: detector confidence {volume.confidence:.2f}")
    return scan, volumes


def _extract(args):
    from spine_tf.io import pictures as report
    from spine_tf.io.scan import scan_name
    _, volumes = _scan_discs(args)
    name = scan_name(args.scan)
    npz = os.path.join(args.out, f"{name}_discs.npz")
    png = os.path.join(args.out, f"{name}_discs.png")
    report.save_volumes(npz, volumes)
    report.save_png(report.montage([v.volume for v in volumes], [v.level for v in volumes]), png)
    print(f"{len(volumes)} discs ({', '.join(v.level for v in volumes)}) -> {npz}, {png}")
    return 0


def _hotspots(args):
    known = [t.name for t in tasks.TABLE]
    unknown = [t for t in args.tasks or () if t not in known]
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}; tasks are {', '.join(known)}")
    at_least_one(args.augmentations, "--augmentations")
    if not args.scan and not args.run_dir:
        raise UsageError("give a SCAN (and --mask or --landmarks, else the detector finds its "
                         "discs) or --run-dir for a dataset split")
    if not args.model and not args.run_dir:
        raise UsageError("--model or --run-dir is needed")
    if args.measure and (args.scan or not args.run_dir):
        raise UsageError("--measure works on a run's split (--run-dir), not on a scan")
    if args.scan:
        return _scan_hotspots(args)
    from spine_tf.evaluation import runs
    model_file = os.path.abspath(args.model) if args.model else rundir.BEST_MODEL
    if args.measure:
        from spine_tf import hotspots
        result, out = runs.measure_hotspots(
            args.run_dir, split=args.split, augmentations=args.augmentations, seed=args.seed,
            limit=args.discs, out_dir=args.out, model_file=model_file)
        print(hotspots.localisation_markdown(result))
        print(f"table: {out}")
        return 0
    paths, count, split = runs.explain_split(
        args.run_dir, args.tasks, split=args.split, discs=args.discs,
        augmentations=args.augmentations, seed=args.seed, out_dir=args.out,
        model_file=model_file)
    print(f"{count} discs of {split}: {', '.join(paths)}")
    return 0


def _scan_hotspots(args):
    import numpy as np
    from spine_tf import hotspots
    from spine_tf.io.scan import scan_name
    from spine_tf.modeling.model import load_model
    explainer = hotspots.Hotspots(load_model(args.model or RunDir(args.run_dir).best_model))
    scan, volumes = _scan_discs(args)
    stacked = np.stack([v.volume for v in volumes])
    transforms = np.stack([v.voxel_to_scan for v in volumes])
    levels = [v.level for v in volumes]
    per_task = explainer.explain(stacked, args.tasks, augmentations=args.augmentations,
                                 seed=args.seed)
    name = scan_name(args.scan)
    out = args.out or "."
    paths = hotspots.save_outputs(out, name, stacked, per_task, levels, transforms)
    nifti = os.path.join(out, f"{name}_hotspots.nii.gz")
    hotspots.save_scan_hotspots(nifti, scan, per_task, transforms)
    print(f"{len(volumes)} discs ({', '.join(levels)}); tasks {', '.join(per_task)} -> "
          f"{', '.join(paths + [nifti])}")
    return 0


def _check_pacs_options(args):
    if args.dicomweb:
        if args.inputs:
            raise UsageError("give SCAN_OR_FOLDER or --dicomweb URL --study UID, not both")
        if not args.study:
            raise UsageError("--dicomweb needs one or more --study STUDY_UID")
        if args.masks or args.landmarks:
            raise UsageError("--masks and --landmarks do not apply to --dicomweb studies (the "
                             "disc detector finds their discs)")
    elif args.study or args.store:
        raise UsageError(f"{'--study' if args.study else '--store'} needs --dicomweb URL")
    elif not args.inputs:
        raise UsageError("give SCAN_OR_FOLDER (scans or folders) or --dicomweb URL --study "
                         "STUDY_UID")


def _predict(args):
    at_least_one(args.augmentations, "--augmentations")
    _check_pacs_options(args)
    from spine_tf.app import predict, predictors, scans
    jobs = [] if args.dicomweb else scans.find_scans(
        args.inputs, masks=args.masks, landmarks=args.landmarks, series=args.series)
    predictor = predictors.load_predictor(args.model)
    detector = load_detector(args.detector, needed=bool(args.dicomweb) or any(
        not (j.mask or j.landmarks) for j in jobs))
    settings = dict(tta=not args.no_tta, hotspots=not args.no_hotspots,
                    augmentations=args.augmentations, seed=args.seed, progress=True,
                    detector=detector)
    count = len(set(args.study)) if args.dicomweb else len(jobs)
    print(f"{count} {'stud(ies) of ' + args.dicomweb if args.dicomweb else 'scan(s)'}; "
          f"model: {predictor.description}"
          + (f"; detector: {detector.source}" if detector is not None else ""))
    if args.dicomweb:
        from spine_tf.app import dicomweb
        summary = dicomweb.grade_studies(args.dicomweb, args.study, predictor, args.out,
                                         series=args.series, store=args.store, log=print,
                                         **settings)
    else:
        summary = predict.run(jobs, predictor, args.out, **settings)
    failed = [s for s in summary["scans"] if s["status"] != "done"]
    for scan in failed:
        print(f"  failed: {scan['name']}: {scan['reason']}")
    not_stored = [s for s in summary["scans"] if s.get("stored", {}).get("status") == "failed"]
    discs = sum(s.get("discs", 0) for s in summary["scans"])
    print(f"{count - len(failed)} of {count} scans graded ({discs} discs)"
          + (f", {count - len(failed) - len(not_stored)} stored" if args.store else "")
          + f"; report: {os.path.join(args.out, predict.INDEX_NAME)}")
    return 1 if (failed and len(failed) == count) or not_stored else 0
