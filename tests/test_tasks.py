"""The task table and its task sets: one row per task, sets in head order, a set found back
from a model's output names."""

import pytest

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.modeling.model import build_model, task_set


def test_sets_pick_rows_of_the_one_table():
    names = [t.name for t in tasks.TABLE]
    assert len(names) == len(set(names))
    for candidate in tasks.TASK_SETS.values():
        assert all(t in tasks.TABLE for t in candidate.tasks)
    assert tasks.TASKS == tasks.PAPER.tasks and tasks.TASK_NAMES == (
        "pfirrmann", "narrowing", "endplate_upper", "endplate_lower", "marrow_upper",
        "marrow_lower")
    spider = tasks.task_set("spider")
    assert spider.names == ("pfirrmann", "narrowed", "endplate_upper", "endplate_lower",
                            "modic", "herniation", "bulging", "spondylolisthesis")
    assert [t.num_classes for t in spider.tasks] == [5, 2, 2, 2, 2, 2, 2, 2]
    assert spider.task("pfirrmann") is tasks.task("pfirrmann")  # the same row in both


def test_mirroring_swaps_sided_tasks_only():
    assert tasks.MIRRORED == (0, 1, 3, 2, 5, 4)
    assert tasks.task_set("spider").mirrored == (0, 1, 3, 2, 4, 5, 6, 7)  # modic has no side
    assert [t.name for t in tasks.task_set("spider").lesion_tasks] == [
        "endplate_upper", "endplate_lower"]


def test_a_set_is_found_from_its_names_and_errors_name_the_choices():
    spider = tasks.task_set("spider")
    assert tasks.task_set_of(spider.names) is spider
    assert tasks.task_set_of(reversed(spider.names), ordered=False) is spider
    with pytest.raises(ValueError, match="no task set has the tasks modic, pfirrmann"):
        tasks.task_set_of(("modic", "pfirrmann"))
    with pytest.raises(ValueError):
        tasks.task_set_of(reversed(spider.names))  # a model's outputs keep their order
    with pytest.raises(KeyError, match="task sets are paper, spider"):
        tasks.task_set("lumbar")
    with pytest.raises(KeyError, match="the paper tasks are pfirrmann"):
        tasks.PAPER.task("modic")


def test_the_model_has_one_head_per_task_of_its_set():
    model = build_model(width=0.0625, task_set="spider")
    assert task_set(model) is tasks.task_set("spider")
    assert [tuple(o.shape) for o in model.outputs] == [
        (None, t.num_classes) for t in tasks.task_set("spider").tasks]
    assert task_set(build_model(width=0.0625)) is tasks.PAPER


def test_the_task_set_is_a_checked_model_setting():
    config = config_lib.override(config_lib.ExperimentConfig(), ["model.task_set='spider'"])
    assert config.model.task_set == "spider"
    with pytest.raises(config_lib.ConfigError, match="model.task_set must be one of paper, "
                                                     "spider, not 'lumbar'"):
        config_lib.override(config_lib.ExperimentConfig(), ["model.task_set='lumbar'"])
