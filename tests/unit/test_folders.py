"""The reference's folder rules (appdirs on Linux, application "vantage6"), checked rule by rule.

tests/integration/test_reference_cli.py checks the same folders against the reference CLI itself.
"""
from pathlib import Path

import pytest

from v6node.app.folders import (
    config_dir,
    configured_names,
    data_dir,
    locate,
    locate_file,
    locate_in_container,
    log_dir,
    log_file_name,
    name_problem,
)

HOME = {"HOME": "/home/ann"}


def test_user_folders_default_to_the_xdg_defaults_under_home():
    assert config_dir(False, HOME) == Path("/home/ann/.config/vantage6/node")
    assert data_dir("alpha", False, HOME) == Path("/home/ann/.local/share/vantage6/node/alpha")
    assert log_dir("alpha", False, HOME) == Path("/home/ann/.cache/vantage6/log/node/alpha")
    assert log_file_name(False) == "node_user.log"


def test_user_folders_follow_the_xdg_variables():
    env = {**HOME, "XDG_CONFIG_HOME": "/c", "XDG_DATA_HOME": "/d", "XDG_CACHE_HOME": "/k"}
    assert config_dir(False, env) == Path("/c/vantage6/node")
    assert data_dir("alpha", False, env) == Path("/d/vantage6/node/alpha")
    assert log_dir("alpha", False, env) == Path("/k/vantage6/log/node/alpha")


def test_empty_xdg_variables_count_as_unset():
    env = {**HOME, "XDG_CONFIG_HOME": "", "XDG_DATA_DIRS": ""}
    assert config_dir(False, env) == Path("/home/ann/.config/vantage6/node")
    assert data_dir("alpha", True, env) == Path("/usr/local/share/vantage6/node/alpha")


def test_system_folders_are_etc_vantage6_and_the_first_site_data_folder():
    assert config_dir(True, HOME) == Path("/etc/vantage6/node")
    assert data_dir("alpha", True, HOME) == Path("/usr/local/share/vantage6/node/alpha")
    # System nodes log into their data folder.
    assert log_dir("alpha", True, HOME) == Path("/usr/local/share/vantage6/node/alpha")
    assert log_file_name(True) == "node_system.log"


def test_system_config_folder_is_etc_vantage6_whenever_the_xdg_one_says_xdg():
    assert config_dir(True, {**HOME, "XDG_CONFIG_DIRS": "/opt/xdg-conf:/etc/xdg"}) == Path("/etc/vantage6/node")
    assert config_dir(True, {**HOME, "XDG_CONFIG_DIRS": "/srv/conf:/etc/xdg"}) == Path("/srv/conf/vantage6/node")
    assert data_dir("a", True, {**HOME, "XDG_DATA_DIRS": "/srv/share:/usr/share"}) == Path("/srv/share/vantage6/node/a")


def test_a_node_given_by_file_takes_its_name_from_the_stem_and_the_scope_folders(tmp_path):
    location = locate_file(tmp_path / "beta.yaml", system=False, env={**HOME, "XDG_DATA_HOME": "/d"})
    assert (location.name, location.config_file) == ("beta", tmp_path / "beta.yaml")
    assert location.data_dir == Path("/d/vantage6/node/beta")
    assert (location.container_name, location.data_volume_name) == ("vantage6-beta-user", "vantage6-beta-user-vol")


def test_in_a_container_the_folders_are_the_reference_images_mounts():
    location = locate_in_container("beta", system=True)
    assert location.config_file == Path("/mnt/config/beta.yaml")
    assert (location.data_dir, location.log_dir) == (Path("/mnt/data"), Path("/mnt/log"))
    assert location.container_name == "vantage6-beta-system"


def test_configured_names_are_the_yaml_files_of_the_scope(tmp_path):
    env = {**HOME, "XDG_CONFIG_HOME": str(tmp_path)}
    assert configured_names(False, env) == []
    folder = locate("x", False, env).config_file.parent
    folder.mkdir(parents=True)
    for name in ("b.yaml", "a.yaml", "notes.txt"):
        (folder / name).write_text("")
    assert configured_names(False, env) == ["a", "b"]


@pytest.mark.parametrize("name", ["alpha", "node-1", "a.b_c", "7"])
def test_good_names(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "has space", "../up", "-x", ".hidden", "ü", "a/b"])
def test_names_that_cannot_name_files_and_containers_are_refused(name):
    assert name_problem(name)
