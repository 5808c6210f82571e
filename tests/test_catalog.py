"""The catalogue: CSV import (all or nothing), key grammar, add / rename / describe / list / remove (CLI too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from segport.app import App
from segport.cli import cli
from segport.domain.keys import KeyKind, ValueType
from segport.errors import Conflict, ImportRejected, InvalidParameter, KeyInUse, UnknownKey
from segport.services.data import SegmentSpec, catalog_entry
from tests.conftest import PROJECT, write_users_csv


@pytest.fixture
def project(app: App) -> App:
    app.meta.create_project(PROJECT, "示例项目")
    return app


def test_catalog_csv_import_with_types_descriptions_and_bare_identities(project: App) -> None:
    text = (
        "\ufeffkey,name,type,description\n$basic_userId,用户ID,string,登录用户\nid_$anonymous_user,设备,string[],\n"
        "usr_age,年龄,int,\nusr_score,积分,double,\nusr_since,注册日期,date,\ntag_hobby,爱好,string[],\n"
        "usr_note,,,\n"
    )
    assert project.data.import_catalog_csv(PROJECT, text) == (7, 0)
    c = project.meta.catalog(PROJECT)
    assert list(c.entries) == [
        "id_$basic_userId",
        "id_$anonymous_user",
        "usr_age",
        "usr_score",
        "usr_since",
        "tag_hobby",
        "usr_note",
    ]
    e = c.get("id_$basic_userId")
    assert e is not None and (e.kind, e.name, e.description) == (KeyKind.IDENTITY, "用户ID", "登录用户")
    hobby = c.get("tag_hobby")
    assert hobby is not None and (hobby.kind, hobby.type, hobby.multi) == (KeyKind.TAG, ValueType.STRING, True)
    note = c.get("usr_note")
    assert note is not None and (note.name, note.type) == ("usr_note", ValueType.STRING)  # defaults
    # re-importing renames and re-describes, never changes a type
    assert project.data.import_catalog_csv(PROJECT, "key,name,type\nusr_age,岁数,int\n") == (0, 1)
    with pytest.raises(Conflict, match="cannot change"):
        project.data.import_catalog_csv(PROJECT, "key,name,type\nusr_new,新,string\nusr_age,岁数,string\n")
    assert "usr_new" not in project.meta.catalog(PROJECT)  # all or nothing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key,name\nusr_a,A\n", "missing type"),
        ("key,name,type\nusr_a,A,string\nbad key,B,string\n", "catalogue row 2: invalid key 'bad key'"),
        ("key,name,type\nusr_1a,A,string\n", "catalogue row 1: invalid key"),
        ("key,name,type\nuser_a,A,string\n", "invalid key 'user_a'"),
        ("key,name,type\nusr_a,A,blob\n", "unknown type 'blob'"),
        ("key,name,type\nid_$x,X,int\n", "identity 'id_$x' must be of type string"),
        ("key,name,type\nusr_a,A,int\nusr_a,B,int\n", "row 2: key 'usr_a' appears twice"),
        ("\r0", "missing key, name, type"),
        ('key,name,type\nusr_a,"' + "x" * 200_000 + '",string\n', "not valid CSV"),
        ("", "missing key, name, type"),
    ],
)
def test_bad_catalog_files_change_nothing(project: App, text: str, message: str) -> None:
    with pytest.raises((ImportRejected, InvalidParameter)) as exc:
        project.data.import_catalog_csv(PROJECT, text)
    assert message in exc.value.message
    assert project.meta.catalog(PROJECT).entries == {}


@pytest.mark.parametrize("key", ["usr_a", "tag_$b_1", "id_$basic_userId", "ids_$basic_userId", "$anon", "usr__x$"])
def test_key_grammar_accepts(key: str) -> None:
    assert catalog_entry(key, "").key.startswith(("usr_", "tag_", "id_"))


@pytest.mark.parametrize(
    "key", ["usr_", "tag_1x", "usr_a-b", "usr_中文", "gio_id", "usr_a b", "x_a", "usr_" + "a" * 100]
)
def test_key_grammar_rejects(key: str) -> None:
    with pytest.raises(Exception, match="key"):
        catalog_entry(key, "")


def test_rename_describe_and_remove(project: App, tmp_path: Path) -> None:
    project.data.import_catalog_csv(PROJECT, "key,name,type\nid_$basic_userId,ID,string\nusr_a,A,int\nusr_b,B,string\n")
    project.data.import_users(
        PROJECT,
        write_users_csv(tmp_path / "u.csv", [{"id_$basic_userId": "X", "usr_a": "1"}], ["id_$basic_userId", "usr_a"]),
    )
    e = project.data.update_catalog_entry(PROJECT, "usr_a", name="甲")
    assert (e.name, e.type) == ("甲", ValueType.INT)
    e = project.data.update_catalog_entry(PROJECT, "usr_a", description="说明")
    assert (e.name, e.description) == ("甲", "说明")
    project.data.create_segment(
        PROJECT, SegmentSpec(key="seg_a", name="a", rule={"key": "usr_a", "op": "eq", "value": 1})
    )
    with pytest.raises(KeyInUse, match="seg_a"):
        project.data.remove_catalog_key(PROJECT, "usr_a")
    project.data.remove_catalog_key(PROJECT, "usr_b")
    assert list(project.meta.catalog(PROJECT).entries) == ["id_$basic_userId", "usr_a"]
    # a removed key's values are gone: adding it back starts empty
    project.data.import_catalog_csv(PROJECT, "key,name,type\nusr_b,B,string\n")
    with pytest.raises(UnknownKey, match="not in the catalogue"):
        project.data.remove_catalog_key(PROJECT, "usr_zzz")


def test_catalog_cli_commands_on_the_data_dir(app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = app.settings.data_dir
    app.close()  # the CLI opens the data dir itself
    monkeypatch.setenv("SEGPORT_DATA_DIR", str(data_dir))
    run = CliRunner().invoke
    assert run(cli, ["project", "create", PROJECT, "--name", "示例"]).exit_code == 0
    f = tmp_path / "c.csv"
    f.write_text("key,name,type\nid_$basic_userId,ID,string\nusr_a,A,int\n", encoding="utf-8")
    r = run(cli, ["catalog", "import", "-P", PROJECT, str(f)])
    assert r.exit_code == 0 and "2 added, 0 updated" in r.output
    r = run(
        cli, ["catalog", "add", "-P", PROJECT, "tag_x", "--name", "标签", "--type", "string[]", "--description", "多值"]
    )
    assert r.exit_code == 0, r.output
    assert run(cli, ["catalog", "rename", "-P", PROJECT, "usr_a", "甲"]).exit_code == 0
    assert run(cli, ["catalog", "describe", "-P", PROJECT, "usr_a", "一个整数"]).exit_code == 0
    r = run(cli, ["catalog", "list", "-P", PROJECT])
    assert r.output.splitlines() == [
        "id_$basic_userId\tID\tstring\t",
        "usr_a\t甲\tint\t一个整数",
        "tag_x\t标签\tstring[]\t多值",
    ]
    assert (
        run(
            cli,
            [
                "segment",
                "create",
                "-P",
                PROJECT,
                "--key",
                "seg_a",
                "--name",
                "a",
                "--rule",
                '{"key": "usr_a", "op": "gt", "value": 1}',
            ],
        ).exit_code
        == 0
    )
    r = run(cli, ["catalog", "remove", "-P", PROJECT, "usr_a"])
    assert r.exit_code == 2 and "used by segment(s) seg_a" in r.output
    assert run(cli, ["catalog", "remove", "-P", PROJECT, "tag_x"]).exit_code == 0
    r = run(cli, ["catalog", "add", "-P", PROJECT, "usr bad"])
    assert r.exit_code == 2 and r.output.startswith("error: invalid key")
    r = run(cli, ["catalog", "list", "-P", "Nope0000"])
    assert r.exit_code == 4


def test_names_and_descriptions_have_limits(project: App) -> None:
    project.data.import_catalog_csv(PROJECT, "key,name,type\nusr_a,A,int[]\n")
    with pytest.raises(InvalidParameter, match="at most 200"):
        project.data.update_catalog_entry(PROJECT, "usr_a", name="名" * 201)
    with pytest.raises(ImportRejected, match="row 1: key 'usr_b': a name has at most 200"):
        project.data.import_catalog_csv(PROJECT, "key,name,type\nusr_b," + "x" * 201 + ",int\n")
    with pytest.raises(InvalidParameter, match="cannot be empty"):  # not a silent reset to the key
        project.data.update_catalog_entry(PROJECT, "usr_a", name="")
    e = project.data.update_catalog_entry(PROJECT, "usr_a", description="d")
    assert (e.name, e.type_name) == ("A", "int[]")  # name and type kept
