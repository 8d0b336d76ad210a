"""A client of a TensorFlow Serving deployment of a spine_tf export.

Builds predict requests from disc volumes and reads the responses, in TF
Serving's two APIs:

- REST (port 8501): ``POST /v1/models/<name>[/versions/<v>]:predict`` with
  the JSON body ``{"signature_name": ..., "instances": [<disc volume>, ...]}``
  (the row format: one nested list [112][224][9] per disc); the answer is
  ``{"predictions": [{"<task>_probabilities": [...], "<task>_grade": g, ...},
  ...]}``, one object per disc, or ``{"error": "..."}``.
- gRPC (port 8500): ``tensorflow.serving.PredictionService/Predict`` with a
  ``PredictRequest`` (``model_spec`` name, version, signature;
  ``inputs["disc_volume"]`` a TensorProto); needs ``tensorflow-serving-api``
  (README: "Serving").

``spine-tf client`` reads scans, localises and extracts their discs as
``spine-tf predict`` does, sends one request per scan and prints the grades.

Example:
    url = rest_url("localhost", "spinenet")
    probabilities, grades = rest_predict(url, volumes, signature="predict_tta")
"""

import json
import urllib.error
import urllib.request

import numpy as np

from spine_tf import tasks
from spine_tf.errors import SpineTFError

REST_PORT, GRPC_PORT = 8501, 8500
DECIMALS = 6
"""Decimals of the volumes in REST requests (the stored volumes are 16-bit: 1.5e-5 apart)."""


class ClientError(SpineTFError, RuntimeError):
    """The server could not be reached or answered with an error (the message says which)."""


def _volumes(volumes):
    volumes = np.asarray(volumes, np.float32)
    if volumes.ndim == 3:
        volumes = volumes[None]
    if volumes.shape[1:] != tuple(tasks.VOLUME_SHAPE):
        raise ValueError(f"disc volumes must be (n, {', '.join(map(str, tasks.VOLUME_SHAPE))}), "
                         f"not {volumes.shape}")
    return volumes


# --------------------------------------------------------------------- REST

def rest_url(host, model_name, version=None, port=REST_PORT):
    """The REST predict URL of a model (its newest version unless ``version``)."""
    version_part = f"/versions/{int(version)}" if version is not None else ""
    return f"http://{host}:{port}/v1/models/{model_name}{version_part}:predict"


def rest_request(volumes, signature="serving_default"):
    """The JSON-ready body of a REST predict request for disc volumes (row format)."""
    rounded = np.round(_volumes(volumes).astype(np.float64), DECIMALS)
    return {"signature_name": signature, "instances": rounded.tolist()}


def _answer_task_set(names):
    """The task set of an answer's output names; ClientError when they are not one's."""
    suffix = "_probabilities"
    try:
        return tasks.task_set_of([n[:-len(suffix)] for n in names if n.endswith(suffix)],
                                 ordered=False)
    except ValueError as error:
        raise ClientError(f"the answer's outputs are not a spine_tf model's ({error})") from error


def parse_rest_response(body):
    """A REST predict answer -> (probabilities, grades), dicts by task in the model's
    task-set order.

    Args:
        body: the decoded JSON answer (row format, ``predictions``; or the
            columnar format, ``outputs``).

    Returns:
        probabilities: {task: float32 (n, classes)}; grades: {task: int (n,)}.

    Raises:
        ClientError: an ``error`` answer, or one without every task's outputs.
    """
    if "error" in body:
        raise ClientError(f"the server answered: {body['error']}")
    if "predictions" in body:
        rows = body["predictions"]
        columns = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
    elif "outputs" in body:
        columns = body["outputs"]
    else:
        raise ClientError(f"not a predict answer (keys: {', '.join(body) or 'none'})")
    probabilities, grades = {}, {}
    for task in _answer_task_set(columns).tasks:
        name_p, name_g = task.output_names
        if name_p not in columns or name_g not in columns:
            raise ClientError(f"the answer lacks {name_p} / {name_g}: is the model a spine_tf "
                              "export?")
        probabilities[task.name] = np.asarray(columns[name_p], np.float32).reshape(
            -1, task.num_classes)
        grades[task.name] = np.asarray(columns[name_g], np.int64).reshape(-1)
    return probabilities, grades


def rest_predict(url, volumes, signature="serving_default", timeout=120):
    """Sends a REST predict request; returns ``parse_rest_response`` of the answer."""
    data = json.dumps(rest_request(volumes, signature)).encode("utf-8")
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = json.loads(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            text = json.loads(text).get("error", text)
        except ValueError:
            pass
        raise ClientError(f"{url}: HTTP {error.code}: {text}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ClientError(f"{url}: cannot reach the server: {error}") from error
    return parse_rest_response(body)


# --------------------------------------------------------------------- gRPC

def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as error:
        raise ClientError("gRPC needs tensorflow-serving-api: pip install --no-deps "
                          "tensorflow-serving-api (README: Serving)") from error
    return predict_pb2, prediction_service_pb2_grpc


def grpc_request(volumes, model_name, signature="serving_default", version=None):
    """A ``PredictRequest`` for disc volumes."""
    import tensorflow as tf
    predict_pb2, _ = _serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[tasks.INPUT_NAME].CopyFrom(tf.make_tensor_proto(_volumes(volumes)))
    return request


def parse_grpc_response(response):
    """A ``PredictResponse`` -> (probabilities, grades), dicts by task (``parse_rest_response``)."""
    import tensorflow as tf
    probabilities, grades = {}, {}
    for task in _answer_task_set(response.outputs).tasks:
        name_p, name_g = task.output_names
        if name_p not in response.outputs or name_g not in response.outputs:
            raise ClientError(f"the answer lacks {name_p} / {name_g}: is the model a spine_tf "
                              "export?")
        probabilities[task.name] = tf.make_ndarray(response.outputs[name_p]).astype(np.float32)
        grades[task.name] = tf.make_ndarray(response.outputs[name_g]).astype(np.int64)
    return probabilities, grades


def grpc_predict(target, model_name, volumes, signature="serving_default", version=None,
                 timeout=120):
    """Sends a gRPC predict request to ``target`` (``host:8500``)."""
    import grpc
    _, service = _serving_apis()
    with grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 1 << 30),
            ("grpc.max_receive_message_length", 1 << 30)]) as channel:
        stub = service.PredictionServiceStub(channel)
        try:
            response = stub.Predict(grpc_request(volumes, model_name, signature, version),
                                    timeout=timeout)
        except grpc.RpcError as error:
            raise ClientError(f"{target}: {error.code().name}: {error.details()}") from error
    return parse_grpc_response(response)


__all__ = ["ClientError", "GRPC_PORT", "REST_PORT", "grpc_predict", "grpc_request",
           "parse_grpc_response", "parse_rest_response", "rest_predict",
           "rest_request", "rest_url"]
