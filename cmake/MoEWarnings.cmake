#===- MoEWarnings.cmake - warnings as errors on our own code -------------===#
#
# moe_target_warnings(<target>) turns on the warning set every target of ours
# uses. It is per target (not a directory property) so that generated code
# and third-party headers keep their own rules.
#
# add_mlir_library compiles sources in an object library `obj.<target>`;
# options must go there too, which moe_target_compile_options does.
#
#===----------------------------------------------------------------------===#
function(moe_target_compile_options target)
  foreach(t IN ITEMS ${target} obj.${target})
    if(TARGET ${t})
      target_compile_options(${t} PRIVATE ${ARGN})
    endif()
  endforeach()
endfunction()

function(moe_target_warnings target)
  moe_target_compile_options(${target}
    -Wall -Wextra -Werror
    $<$<COMPILE_LANGUAGE:CXX>:-Werror=deprecated-declarations>
    $<$<COMPILE_LANGUAGE:CXX>:-Wno-unused-parameter>)
endfunction()
