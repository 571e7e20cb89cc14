"""Installing distributions: manifests, downloads, built-in sources and images, OOBE, distribution conf."""
