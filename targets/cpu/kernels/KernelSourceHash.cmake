# Writes ${OUTPUT}: a header with the SHA-256 of the kernel generator's
# sources (${SOURCES}), part of every compiled kernel's cache key, so that
# changing an algorithm or a schedule invalidates cached kernels.
string(REPLACE "|" ";" SOURCES "${SOURCES}")
set(text "")
foreach(source IN LISTS SOURCES)
  file(SHA256 ${source} digest)
  string(APPEND text "${digest}")
endforeach()
string(SHA256 combined "${text}")
set(content "#define MOE_KERNEL_SOURCE_HASH \"${combined}\"\n")
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} old)
endif()
if(NOT "${old}" STREQUAL "${content}")
  file(WRITE ${OUTPUT} "${content}")
endif()
