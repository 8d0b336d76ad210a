"""The TF Serving client: requests and answers in TF Serving's REST and gRPC formats.

TF Serving itself cannot run here (no tensorflow_model_server on PyPI or Debian), so
the servers below are stand-ins that follow its documented formats and answer with the exported
SavedModel's own signatures: what the client sends is what TF Serving would
feed the signature, and what it reads back is compared with the SavedModel.
"""

import http.server
import json
import threading
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from spine_tf import tasks
from spine_tf.serving import client
from spine_tf.serving import export
from spine_tf.modeling import model as model_lib

MODEL_NAME = "spinenet"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = model_lib.build_model(width=0.0625)
    model_lib.mean_subtraction(model).set_mean(np.full(9, 0.3))
    path = export.export(model, str(tmp_path_factory.mktemp("models")), MODEL_NAME)
    return export.load(path)


@pytest.fixture(scope="module")
def volumes():
    # 16-bit levels, as stored volumes are: the REST rounding to 6 decimals keeps them
    return (np.random.default_rng(5).integers(0, 65536, (2,) + tasks.VOLUME_SHAPE)
            / 65535).astype(np.float32)


def _reference(served, volumes, signature):
    outputs = served.signatures[signature](disc_volume=tf.constant(volumes))
    return ([outputs[t.output_names[0]].numpy() for t in tasks.TASKS],
            [outputs[t.output_names[1]].numpy() for t in tasks.TASKS])


class _RestServing(http.server.BaseHTTPRequestHandler):
    """TF Serving's REST predict API (row format) over a loaded SavedModel."""

    served = None

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != f"/v1/models/{MODEL_NAME}:predict":
            return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
        try:
            outputs = self.served.signatures[body.get("signature_name", "serving_default")](
                disc_volume=tf.constant(body["instances"], tf.float32))
        except (tf.errors.InvalidArgumentError, KeyError, ValueError) as error:
            return self._answer(400, {"error": str(error).splitlines()[0]})
        rows = [{k: v.numpy()[i].tolist() for k, v in outputs.items()}
                for i in range(len(body["instances"]))]
        return self._answer(200, {"predictions": rows})

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def rest_server(served):
    handler = type("Handler", (_RestServing,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_rest_request_is_tf_servings_row_format(volumes):
    body = client.rest_request(volumes, signature="predict_tta")
    assert body["signature_name"] == "predict_tta"
    instances = np.array(body["instances"])
    assert instances.shape == (2,) + tasks.VOLUME_SHAPE
    np.testing.assert_allclose(instances, volumes, atol=5e-7)
    json.dumps(body)
    with pytest.raises(ValueError, match="disc volumes must be"):
        client.rest_request(np.zeros((2, 112, 224, 8)))
    assert client.rest_url("h", "m") == "http://h:8501/v1/models/m:predict"
    assert client.rest_url("h", "m", 3, 9000) == "http://h:9000/v1/models/m/versions/3:predict"


def test_parse_rest_response_reads_both_formats_and_errors():
    row = {}
    for task in tasks.TASKS:
        p = np.eye(task.num_classes)[1].tolist()
        row[task.output_names[0]], row[task.output_names[1]] = p, 1
    probabilities, grades = client.parse_rest_response({"predictions": [row, row]})
    assert list(probabilities) == list(grades) == list(tasks.TASK_NAMES)
    assert [p.shape for p in probabilities.values()] == [(2, t.num_classes) for t in tasks.TASKS]
    assert all((g == 1).all() for g in grades.values())
    columns = {k: [v, v, v] for k, v in row.items()}
    probabilities, _ = client.parse_rest_response({"outputs": columns})
    assert probabilities["pfirrmann"].shape == (3, 5) and probabilities["pfirrmann"][2, 1] == 1
    spider = {}
    for task in tasks.task_set("spider").tasks:  # another model's tasks, in any key order
        spider[task.output_names[1]], spider[task.output_names[0]] = 0, [0.5] * task.num_classes
    _, grades = client.parse_rest_response({"predictions": [spider]})
    assert list(grades) == list(tasks.task_set("spider").names)
    with pytest.raises(client.ClientError, match="not a spine_tf model's"):
        client.parse_rest_response({"predictions": [{"scores": [1.0]}]})
    with pytest.raises(client.ClientError, match="the server answered: boom"):
        client.parse_rest_response({"error": "boom"})
    del row["marrow_lower_grade"]
    with pytest.raises(client.ClientError, match="lacks marrow_lower_probabilities"):
        client.parse_rest_response({"predictions": [row]})


@pytest.mark.parametrize("signature", ["serving_default", "predict_tta"])
def test_rest_round_trip_matches_the_saved_model(served, rest_server, volumes, signature):
    url = client.rest_url("127.0.0.1", MODEL_NAME, port=rest_server)
    probabilities, grades = client.rest_predict(url, volumes, signature=signature)
    want_p, want_g = _reference(served, volumes, signature)
    for got, want in zip(probabilities.values(), want_p):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(grades.values(), want_g):
        np.testing.assert_array_equal(got, want)


def test_rest_errors_name_the_url_and_the_reason(rest_server, volumes):
    url = client.rest_url("127.0.0.1", "other", port=rest_server)
    with pytest.raises(client.ClientError, match="HTTP 404: Servable not found"):
        client.rest_predict(url, volumes)
    with pytest.raises(client.ClientError, match="cannot reach the server"):
        client.rest_predict(client.rest_url("127.0.0.1", MODEL_NAME, port=1), volumes, timeout=5)


def test_grpc_round_trip_matches_the_saved_model(served, volumes):
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (the service's name)
            assert request.model_spec.name == MODEL_NAME
            outputs = served.signatures[request.model_spec.signature_name](
                disc_volume=tf.constant(tf.make_ndarray(request.inputs["disc_volume"])))
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[
        ("grpc.max_receive_message_length", 1 << 30)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        request = client.grpc_request(volumes, MODEL_NAME, "predict_tta", version=2)
        assert request.model_spec.version.value == 2
        np.testing.assert_array_equal(tf.make_ndarray(request.inputs["disc_volume"]), volumes)
        probabilities, grades = client.grpc_predict(f"127.0.0.1:{port}", MODEL_NAME, volumes,
                                                    signature="predict_tta")
    finally:
        server.stop(0)
    want_p, want_g = _reference(served, volumes, "predict_tta")
    for got, want in zip(probabilities.values(), want_p):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for got, want in zip(grades.values(), want_g):
        np.testing.assert_array_equal(got, want)


def test_client_command_prints_the_served_grades(served, rest_server, phantom_cohort_dir,
                                                 capsys):
    from spine_tf import cli
    from spine_tf.app import scans
    scan = phantom_cohort_dir / "scans" / "ph1-00003.nii.gz"
    landmarks = phantom_cohort_dir / "landmarks" / "ph1-00003.json"
    code = cli.main(["client", str(scan), "--landmarks", str(landmarks),
                     "--server", f"127.0.0.1:{rest_server}", "--signature", "serving_default"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    _, _, volumes, _ = scans.extract_scan(scans.find_scans([scan], landmarks=landmarks)[0])
    _, grades = _reference(served, np.stack([v.volume for v in volumes]), "serving_default")
    assert lines[0] == "ph1-00003:"
    for n, volume in enumerate(volumes):
        assert lines[2 + n].split() == [volume.level] + [
            t.class_names[g[n]] for t, g in zip(tasks.TASKS, grades)]
