# Libraries without a CMake package config on Debian 12: OpenBLAS (cblas) and jemalloc.
include_guard(GLOBAL)

find_path(TESSERA_CBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread
  NO_DEFAULT_PATH)
if(NOT TESSERA_CBLAS_INCLUDE)
  find_path(TESSERA_CBLAS_INCLUDE cblas.h REQUIRED)
endif()
find_library(TESSERA_OPENBLAS_LIB NAMES openblas REQUIRED)
add_library(tessera_blas INTERFACE)
target_include_directories(tessera_blas SYSTEM INTERFACE ${TESSERA_CBLAS_INCLUDE})
target_link_libraries(tessera_blas INTERFACE ${TESSERA_OPENBLAS_LIB})

find_library(TESSERA_JEMALLOC_LIB NAMES jemalloc)
if(TESSERA_JEMALLOC AND NOT TESSERA_JEMALLOC_LIB)
  message(WARNING "jemalloc not found: daemons use the system allocator")
endif()
