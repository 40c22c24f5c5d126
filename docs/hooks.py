"""MkDocs hook: the configuration reference, written from the schema at every build
(``leuktune.config.keys``), so that it lists every key of ``ExperimentConfig`` as the code has it."""

from mkdocs.structure.files import File

from leuktune.config.keys import reference_markdown


def on_files(files, config):
    files.append(File.generated(config, "reference/configuration.md", content=reference_markdown()))
    return files
