/*===- moert.h - The moec runtime -----------------------------------------===*/

#ifndef MOERT_MOERT_H
#define MOERT_MOERT_H

#include "moert/hash.h"
#include "moert/host_abi.h"
#include "moert/llm.h"
#include "moert/sampler.h"
#include "moert/session.h"
#include "moert/status.h"
#include "moert/text.h"
#include "moert/text_format.h"
#include "moert/tokenizer.h"
#include "moert/weights.h"
#include "moert/weights_format.h"

#endif /* MOERT_MOERT_H */
