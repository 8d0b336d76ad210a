"""``spine-tf export`` and ``spine-tf client``: a SavedModel for TF Serving, and grading
scans through a running server."""

from spine_tf import tasks
from spine_tf.cli.options import add_scan_inputs


def add_parsers(commands):
    exp = commands.add_parser("export", help="export a model for TF Serving",
                              description="Writes a SavedModel for TensorFlow Serving into "
                              "BASE/NAME/VERSION with the serving_default, predict_tta and "
                              "hotspots signatures and the model's metadata in "
                              "assets/spine_tf.json.")
    exp.add_argument("--model", required=True,
                     help="a .keras model, 'shipped' (the package's grading model), or a "
                     "spine-tf train run directory (its best.keras "
                     "and config.json)")
    exp.add_argument("--name", default="spinenet", help="model name (default: %(default)s)")
    exp.add_argument("--base", default="saved_models",
                     help="model base folder (default: %(default)s)")
    exp.add_argument("--version", type=int, help="version (default: the next free one)")
    exp.add_argument("--hotspot-augmentations", type=int, default=150,
                     help="augmented copies per disc in the hotspots signature "
                     "(default: %(default)s)")
    exp.set_defaults(run=_export)

    cl = commands.add_parser("client", help="grade scans through a TF Serving server",
                             description="Reads scans, localises and extracts their discs (as "
                             "predict does) and sends one predict request per scan to a "
                             "TensorFlow Serving server (REST, or gRPC with "
                             "tensorflow-serving-api); prints the grades.")
    add_scan_inputs(cl)
    cl.add_argument("--server", default="localhost",
                    help="host, or host:port (default ports: REST 8501, gRPC 8500)")
    cl.add_argument("--model-name", default="spinenet", help="served model name")
    cl.add_argument("--version", type=int, help="model version (default: the newest)")
    cl.add_argument("--grpc", action="store_true", help="gRPC instead of REST")
    cl.add_argument("--signature", default="predict_tta",
                    choices=["predict_tta", "serving_default"])
    cl.set_defaults(run=_client)


def _export(args):
    from spine_tf.serving import export
    path = export.export_run(args.model, args.base, args.name, version=args.version,
                             augmentations=args.hotspot_augmentations)
    print(f"exported {args.model} -> {path} (signatures: {', '.join(export.SIGNATURES)})")
    print(f"inspect: saved_model_cli show --dir {path} --all")
    return 0


def _client(args):
    import numpy as np
    from spine_tf.app import scans
    from spine_tf.serving import client
    host, _, port = args.server.partition(":")
    port = int(port) if port else (client.GRPC_PORT if args.grpc else client.REST_PORT)
    jobs = scans.find_scans(args.inputs, masks=args.masks, landmarks=args.landmarks)
    failed = 0
    for job in jobs:
        try:
            _, _, volumes, _ = scans.extract_scan(job)
            stacked = np.stack([v.volume for v in volumes])
            if args.grpc:
                _, grades = client.grpc_predict(f"{host}:{port}", args.model_name, stacked,
                                                args.signature, args.version)
            else:
                url = client.rest_url(host, args.model_name, args.version, port)
                _, grades = client.rest_predict(url, stacked, args.signature)
        except (scans.PredictError, client.ClientError, ValueError, OSError) as error:
            print(f"{job.name}: failed: {error}")
            failed += 1
            continue
        print(f"{job.name}:")
        print("  " + "level".ljust(8) + "".join(name.ljust(16) for name in grades))
        for n, volume in enumerate(volumes):
            print("  " + volume.level.ljust(8) + "".join(
                tasks.task(name).class_names[g[n]].ljust(16) for name, g in grades.items()))
    return 1 if failed == len(jobs) else 0
