#===- cmake/MoECrossRuntime.cmake - the runtime for another architecture -===#
#
# moe_cross_runtime(<name> NATIVE <regex> TRIPLE <triple> PACKAGE <package>)
#
# moec links an executable for another architecture with the runtime built
# for it. On a machine whose CMAKE_SYSTEM_PROCESSOR matches NATIVE the
# native runtime (build/lib) serves, and nothing is done. Otherwise, if
# Debian's cross compiler <triple>-gcc is installed, runtime/ is built with
# it into build/lib/<name> (the description's runtime_dir); if not, the
# build goes on and moec names PACKAGE when the target is asked for.
#
#===----------------------------------------------------------------------===#
include(ExternalProject)

function(moe_cross_runtime name)
  cmake_parse_arguments(ARG "" "NATIVE;TRIPLE;PACKAGE" "" ${ARGN})
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "${ARG_NATIVE}")
    return()
  endif()
  set(cc ${ARG_TRIPLE}-gcc)
  find_program(MOE_CROSS_CC_${name} ${cc})
  if(NOT MOE_CROSS_CC_${name})
    message(STATUS "${cc} not found: no ${name} runtime "
                   "(install ${ARG_PACKAGE} for --target=${name})")
    return()
  endif()
  # A CMake toolchain file for Debian's cross compiler and its sysroot.
  string(REGEX REPLACE "-.*" "" processor ${ARG_TRIPLE})
  set(toolchain ${CMAKE_BINARY_DIR}/runtime-${name}-toolchain.cmake)
  file(CONFIGURE OUTPUT ${toolchain} CONTENT "\
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${processor})
set(CMAKE_C_COMPILER ${cc})
set(CMAKE_FIND_ROOT_PATH /usr/${ARG_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
")
  set(lib ${CMAKE_BINARY_DIR}/lib/${name})
  ExternalProject_Add(moert-${name}
    SOURCE_DIR ${PROJECT_SOURCE_DIR}/runtime
    BINARY_DIR ${CMAKE_BINARY_DIR}/runtime-${name}
    CMAKE_ARGS
      -DCMAKE_TOOLCHAIN_FILE=${toolchain}
      -DCMAKE_BUILD_TYPE=Release
      -DMOERT_BUILD_TESTS=OFF
      -DMOERT_HALIDE_RUNTIME_INCLUDE_DIR=${MOE_HALIDE_INCLUDE_DIR}
      -DCMAKE_ARCHIVE_OUTPUT_DIRECTORY=${lib}
    # The runtime's sources change with the project: always look.
    BUILD_ALWAYS ON
    INSTALL_COMMAND ""
    BUILD_BYPRODUCTS ${lib}/libmoert.a ${lib}/libmoert_main.a)
  install(FILES ${lib}/libmoert.a ${lib}/libmoert_main.a
          DESTINATION lib/${name})
endfunction()
