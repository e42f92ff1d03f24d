# Locates libtorch inside the torch wheel of the Python interpreter that builds mpq, so that the
# torch mpq compiles against is the torch it runs with.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
execute_process(
  COMMAND ${Python3_EXECUTABLE} -c
    "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(int(torch.compiled_with_cxx11_abi()))"
  OUTPUT_VARIABLE _mpq_torch_info OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _mpq_torch_rc)
if(NOT _mpq_torch_rc EQUAL 0)
  message(FATAL_ERROR "mpq: cannot import torch with ${Python3_EXECUTABLE}. Install torch first "
                      "(pip install torch), then build mpq with pip install --no-build-isolation .")
endif()
string(REPLACE "\n" ";" _mpq_torch_info "${_mpq_torch_info}")
list(GET _mpq_torch_info 0 _mpq_torch_prefix)
list(GET _mpq_torch_info 1 MPQ_TORCH_VERSION)
list(GET _mpq_torch_info 2 MPQ_TORCH_CXX11_ABI)
list(APPEND CMAKE_PREFIX_PATH "${_mpq_torch_prefix}")
find_package(Torch REQUIRED)
find_library(MPQ_TORCH_PYTHON_LIBRARY torch_python PATHS "${TORCH_INSTALL_PREFIX}/lib" REQUIRED NO_DEFAULT_PATH)
message(STATUS "mpq: torch ${MPQ_TORCH_VERSION} (CXX11 ABI ${MPQ_TORCH_CXX11_ABI}) at ${TORCH_INSTALL_PREFIX}")
