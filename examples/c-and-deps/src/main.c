#include <stdio.h>

#include "kernels.h"

int main(void) {
    double total = 0.0;
    unsigned count = sizeof KERNELS / sizeof KERNELS[0];
    for (unsigned k = 0; k < count; k++)
        total += KERNELS[k](4);
    printf("%u kernels, checksum %.6f\n", count, total);
    return 0;
}
