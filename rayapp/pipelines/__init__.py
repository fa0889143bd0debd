"""rayapp.pipelines."""
