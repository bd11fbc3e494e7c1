"""The compiled part of ingest (backend/ingest/_fastpath.pyx): Cython, the system's C compiler
and libcrypto (Debian: gcc, python3-dev, libssl-dev; scripts/setup.sh installs them). Everything
else about the package is in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("backend.ingest._fastpath", ["backend/ingest/_fastpath.pyx"], libraries=["crypto"],
                   # SHA256_Init/Update/Final: deprecated in OpenSSL 3 in favour of EVP, whose
                   # context copy allocates; the plain struct is copied per frame here
                   define_macros=[("OPENSSL_SUPPRESS_DEPRECATED", None)])],
        compiler_directives={"language_level": 3},
    ),
)
