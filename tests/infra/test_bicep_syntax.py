"""Every .bicep file under infra/ parses with the Bicep grammar."""

from __future__ import annotations

from tests.infra.bicep_tree import ROOT, bicep_files, syntax_errors


def test_infra_has_the_main_template_and_modules() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in bicep_files()}
    assert "infra/main.bicep" in names
    assert any(name.startswith("infra/modules/") for name in names)


def test_every_bicep_file_parses() -> None:
    problems = [
        problem for path in bicep_files() for problem in syntax_errors(path.read_bytes(), str(path.relative_to(ROOT)))
    ]
    assert not problems, "Bicep syntax errors:\n" + "\n".join(problems)


def test_a_broken_file_is_reported_with_its_line() -> None:
    broken = b"""param name string

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  properties: {
    httpsOnly: true

}
"""
    problems = syntax_errors(broken, "broken.bicep")
    assert problems, "an unclosed object must be a syntax error"
    assert all(p.startswith("broken.bicep:") for p in problems)


def test_a_stray_token_is_reported_on_its_line() -> None:
    broken = b"""var ok = 'fine'
var bad = = 'twice'
"""
    problems = syntax_errors(broken, "stray.bicep")
    assert any(p.startswith("stray.bicep:2:") for p in problems), problems
