#===- MoEHalide.cmake - Halide 14 as an imported target ------------------===#
#
# Declares Halide::Halide by hand. find_package(Halide) would, in this scope,
# silently switch the LLVM_* variables (and the cached LLVM_DIR) from LLVM 22
# to LLVM 14; see docs/developing.md.
#
# Code that calls Halide must be built with exceptions on, because Halide 14
# reports compile errors as Halide::CompileError exceptions, while LLVM's
# flags add -fno-exceptions. moe_target_uses_halide(<target>) does both.
#
#===----------------------------------------------------------------------===#
find_path(MOE_HALIDE_INCLUDE_DIR Halide.h PATHS /usr/include/halide14
          NO_DEFAULT_PATH REQUIRED)
find_library(MOE_HALIDE_LIBRARY NAMES Halide14 libHalide14.so.0
             PATHS /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu
             REQUIRED)
add_library(Halide::Halide SHARED IMPORTED GLOBAL)
set_target_properties(Halide::Halide PROPERTIES
  IMPORTED_LOCATION ${MOE_HALIDE_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${MOE_HALIDE_INCLUDE_DIR})

function(moe_target_uses_halide target)
  target_link_libraries(${target} PUBLIC Halide::Halide)
  foreach(t IN ITEMS ${target} obj.${target})
    if(TARGET ${t})
      target_include_directories(${t} PRIVATE ${MOE_HALIDE_INCLUDE_DIR})
      target_compile_definitions(${t} PUBLIC HALIDE_WITH_EXCEPTIONS)
    endif()
  endforeach()
  moe_target_compile_options(${target} -fexceptions -frtti)
endfunction()
