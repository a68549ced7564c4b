# Target helpers: one library per directory, explicit dependencies, strict warnings on our code.
include_guard(GLOBAL)

find_program(TESSERA_CCACHE ccache)
if(TESSERA_CCACHE)
  set(CMAKE_C_COMPILER_LAUNCHER ${TESSERA_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${TESSERA_CCACHE})
endif()

set(TESSERA_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
if(TESSERA_WERROR)
  list(APPEND TESSERA_WARNINGS -Werror)
endif()

if(TESSERA_SANITIZE)
  message(STATUS "Tessera: sanitizers ${TESSERA_SANITIZE}")
  add_compile_options(-fsanitize=${TESSERA_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${TESSERA_SANITIZE})
  set(TESSERA_JEMALLOC OFF CACHE BOOL "" FORCE)
endif()

# Applies our warnings and include root to a target.
function(tessera_target_defaults target)
  target_compile_options(${target} PRIVATE ${TESSERA_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/proto)
endfunction()

# tessera_cc_library(NAME n SRCS a.cc ... DEPS x y)
function(tessera_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${ARG_NAME} STATIC ${ARG_SRCS})
  tessera_target_defaults(${ARG_NAME})
  target_link_libraries(${ARG_NAME} PUBLIC ${ARG_DEPS})
endfunction()

# tessera_cc_binary(NAME n SRCS main.cc DEPS x y [MALLOC])  MALLOC links jemalloc when enabled.
function(tessera_cc_binary)
  cmake_parse_arguments(ARG "MALLOC" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  tessera_target_defaults(${ARG_NAME})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS})
  if(ARG_MALLOC AND TESSERA_JEMALLOC AND TESSERA_JEMALLOC_LIB)
    target_link_libraries(${ARG_NAME} PRIVATE ${TESSERA_JEMALLOC_LIB})
  endif()
  set_target_properties(${ARG_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
endfunction()

# tessera_cc_test(NAME n SRCS a_test.cc DEPS x y [LABELS l] [TIMEOUT s])
# Each GoogleTest case becomes its own CTest test so `ctest -j2` spreads them.
function(tessera_cc_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${ARG_NAME} ${ARG_SRCS})
  tessera_target_defaults(${ARG_NAME})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  target_compile_definitions(${ARG_NAME} PRIVATE
    TESSERA_BINARY_DIR="${PROJECT_BINARY_DIR}" TESSERA_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set_target_properties(${ARG_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  gtest_discover_tests(${ARG_NAME}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()
